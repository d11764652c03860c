"""How the GPU check runs: what a run has found so far (rewritten to its report after every check and row),
and the checks and timing rows that apply to any one engine, whichever backend built it.

Each ``check_*`` function returns ``(ok, detail)``, or records its checks in the ``Run`` it is given.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import EngineConfig, SegmentationEngine, create_engine_from_model
from ..weights import WeightsInfo
from . import gpu_models, gpu_pipeline
from .gpu_report import Check, Row, build_report, size_text, write_report
from .timing import TimingSettings

AGREEMENT = {"fp32": 0.999, "fp16": 0.99}  # share of equal pixels against the eager fp32 model


@dataclass(frozen=True)
class Plan:
    """Frames per check and time per timing row."""

    labels: int = 4
    pipeline: int = 24
    memory: int = 200
    memory_warmup: int = 20
    sync: int = 60
    rows: TimingSettings = field(default_factory=TimingSettings)


FULL = Plan()
QUICK = Plan(labels=2, pipeline=12, sync=30, rows=TimingSettings(seconds=0.6, warmup=3, minimum=3))


class Run:
    """What a run has found so far, its clock, and its report, rewritten after every check and row."""

    def __init__(self, budget_s: float, say: Callable[[str], None] | None, out: Path | None = None,
                 describe: Callable[[Run], dict[str, Any]] | None = None) -> None:
        self.checks: list[Check] = []
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self._say = say
        self._out = out
        self._describe = describe
        self.written: tuple[Path, Path] | None = None

    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(f"[{time.monotonic() - self.started:6.1f} s] {text}")

    def report(self) -> dict[str, Any]:
        return self._describe(self) if self._describe is not None else build_report(
            "unknown", torch.__version__, torch.version.cuda or "none", self.checks, self.rows, skipped=self.skipped)

    def save(self) -> None:
        """Rewrite the report with what was found so far (where an ``out`` folder was given)."""
        if self._out is not None:
            self.written = write_report(self.report(), self._out)

    def check(self, name: str, test: Callable[..., tuple[bool, str]], *args: Any) -> bool:
        """Run ``test(*args)`` -> (ok, detail) as the check ``name``; an exception fails it, saying where."""
        try:
            ok, detail = test(*args)
        except Exception as error:  # a check that crashes is a failed check; the run goes on
            ok, detail = False, describe_error(error)
            self.say("".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
        self.checks.append(Check(name, bool(ok), detail))
        self.save()
        self.say(f"{'ok    ' if ok else 'FAILED'} {name}: {detail}")
        return bool(ok)

    def add_row(self, row: Row) -> None:
        self.rows.append(row)
        self.save()
        self.say(f"row {row.model} {row.size} {row.backend} {row.precision} {row.mode}: {row.fps:.1f} fps, "
                 f"p50 {row.latency_ms_p50:.2f} ms ({row.frames} frames)")

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")
        self.save()
        self.say(f"skipped {what}: {why}")

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline


def describe_error(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)[1:]  # the first is where it was caught
    ours = [frame for frame in frames if "seg_node" in frame.filename] or frames  # the innermost line of ours
    where = f" (at {Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name})" if ours else ""
    return f"raised {type(error).__name__}: {error}{where}"


def agreement(labels: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> tuple[float, float]:
    """(mean, worst) share of equal pixels over frames; 0 where shapes differ."""
    shares = [float(np.mean(a == b)) if a is not None and a.shape == b.shape else 0.0
              for a, b in zip(labels, reference, strict=True)]
    return float(np.mean(shares)), float(np.min(shares))


def check_labels(engine: SegmentationEngine, frames: Sequence[np.ndarray], reference: Sequence[np.ndarray]
                 ) -> tuple[bool, str]:
    need = AGREEMENT[engine.precision]
    mean, worst = agreement([engine.infer(frame).labels for frame in frames], reference)
    return mean >= need, f"{100 * mean:.3f}% equal pixels (worst frame {100 * worst:.3f}%; need {100 * need:g}%)"


def other_size(size: tuple[int, int]) -> tuple[int, int]:
    """Twice the frame size, or half of it for large frames: the frame size a camera may switch to."""
    height, width = size
    return (2 * height, 2 * width) if 4 * height * width <= 1024 * 2048 else (height // 2, width // 2)


def build_engine(run: Run, model: torch.nn.Module, info: WeightsInfo, label: str, config: EngineConfig
                 ) -> SegmentationEngine | None:
    built: list[SegmentationEngine] = []

    def build() -> tuple[bool, str]:
        start = time.perf_counter()
        built.append(create_engine_from_model(model, info, config))
        engine = built[0]
        if engine.backend_name != config.backend:  # backend auto may fall back; a named one may not
            return False, f"asked for {config.backend}, built {engine.describe()}"
        agreed = getattr(engine.backend, "agreement", None)  # torch2trt: its labels against torch after the build
        return True, f"{engine.describe()} in {time.perf_counter() - start:.1f} s" + (
            f"; {100 * agreed:.3f}% of torch's labels on the build's test input" if agreed is not None else "")

    run.check(f"{label} engine builds", build)
    return built[0] if built else None


def check_pipeline(run: Run, label: str, engine: SegmentationEngine, frames: Sequence[np.ndarray],
                   plan: Plan) -> None:
    """The FramePipeline checks of one engine."""
    expected = [engine.infer(frame).labels for frame in frames]
    run.check(f"{label} pipeline order and bit-identity", gpu_pipeline.check_order_and_identity, engine, frames,
              expected, plan.pipeline)
    run.check(f"{label} pipeline bad frames fail alone", gpu_pipeline.check_error_isolation, engine, frames,
              expected, plan.pipeline)
    run.check(f"{label} pipeline close() under load", gpu_pipeline.check_close_under_load, engine, frames, expected)
    run.check(f"{label} pipeline no memory growth", gpu_pipeline.check_memory, engine, frames, plan.memory,
              plan.memory_warmup)
    if engine.device == "cuda":
        run.check(f"{label} pipeline steady state: no synchronising torch call, no new CUDA allocation",
                  gpu_pipeline.check_steady_state, engine, frames, plan.sync)


def check_bgr_confidence(run: Run, label: str, model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module,
                         config: EngineConfig, plan: Plan) -> None:
    """The node's other path on ``config``'s backend: BGR frames of another size than the network's, the
    confidence map on, maps at network size (``output_resolution: network``)."""
    config = replace(config, confidence=True, output_resolution="network", cuda_graphs=False)
    engine = build_engine(run, model, info, f"{label} BGR + confidence", config)
    if engine is None:
        return
    try:
        frames = gpu_models.make_frames(plan.labels, *other_size(config.network_size), seed=11)
        reference = [gpu_models.reference_labels(eager, info, frame, config.network_size, engine.device,
                                                 at_network_size=True) for frame in frames]
        run.check(f"{label} BGR frames {size_text(frames[0].shape[:2])}, confidence, maps at network size",
                  gpu_pipeline.check_bgr_confidence, engine, frames, reference, AGREEMENT[engine.precision],
                  plan.pipeline)
    finally:
        engine.close()


def close_all(engines: Iterable[SegmentationEngine], cuda: bool) -> None:
    for engine in list(engines):
        engine.close()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def time_rows(run: Run, where: str, jobs: Sequence[tuple[str, Callable[[], Row]]]) -> None:
    """Each job's row, while time is left; a row that cannot be measured is listed as skipped, not fatal."""
    for what, job in jobs:
        if not run.time_left():
            run.skip(f"{where} {what}", "the time budget was spent")
            continue
        try:
            row = job()
        except Exception as error:  # a row that cannot be measured is reported, not fatal
            run.skip(f"{where} {what}", describe_error(error))
            continue
        run.add_row(row)
