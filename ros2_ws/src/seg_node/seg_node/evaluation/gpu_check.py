"""seg-gpu-check: prove and measure the engine's CUDA path on an NVIDIA GPU, in at most 10 minutes.

    python -m seg_node.evaluation.gpu_check [--out docs/gpu] [--quick]

For CGNet and ContextNet at 360x480 and 1024x2048 (network input = frame size) it checks the torch
backend on CUDA: labels against the eager fp32 model (>= 99.9% equal pixels at fp32, >= 99% at fp16),
CUDA graphs bit-identical to plain, frame-size changes under CUDA graphs, and the FramePipeline (order per
stream, bit-identity with infer, a bad frame failing alone, close() under load, no memory growth over 200
frames, no synchronising CUDA call in its steady state). Then it times naive, synchronous, pipelined and
CUDA-graph rows at fp32 and fp16. It writes <out>/<gpu-name>.json and .md and prints the table.

Needs only PyTorch with CUDA and NumPy; the shipped weights when present (random ones otherwise).
Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device. Speed targets are reported, not
enforced. ``--device cpu`` runs the device-independent checks on the CPU (as the tests do).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import EngineConfig, SegmentationEngine, create_engine_from_model
from ..engine.options import parse_sizes
from ..weights import WeightsInfo
from . import gpu_models, gpu_pipeline, gpu_timing
from .gpu_report import Check, Row, build_report, markdown, size_text, validate_report, write_report
from .gpu_timing import RowBudget

PROG = "seg-gpu-check"
SIZES = ((360, 480), (1024, 2048))
AGREEMENT = {"fp32": 0.999, "fp16": 0.99}  # share of equal pixels against the eager fp32 model
EXIT_OK, EXIT_FAILED, EXIT_NO_CUDA = 0, 1, 2
BUDGET_S = 540.0  # the whole run; rows left when it is spent are skipped (and listed)


@dataclass(frozen=True)
class Plan:
    """Frames per check and time per timing row."""

    labels: int = 4
    pipeline: int = 24
    memory: int = 200
    memory_warmup: int = 20
    sync: int = 60
    rows: RowBudget = field(default_factory=RowBudget)


FULL = Plan()
QUICK = Plan(labels=2, pipeline=12, sync=30, rows=RowBudget(seconds=0.6, warmup=3, minimum=3))


class Run:
    """What a run has found so far, and its clock."""

    def __init__(self, budget_s: float, say: Callable[[str], None] | None) -> None:
        self.checks: list[Check] = []
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self._say = say

    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(f"[{time.monotonic() - self.started:6.1f} s] {text}")

    def check(self, name: str, test: Callable[..., tuple[bool, str]], *args: Any) -> bool:
        """Run ``test(*args)`` -> (ok, detail) as the check ``name``; an exception fails it, saying where."""
        try:
            ok, detail = test(*args)
        except Exception as error:  # a check that crashes is a failed check; the run goes on
            ok, detail = False, describe_error(error)
            self.say("".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
        self.checks.append(Check(name, bool(ok), detail))
        self.say(f"{'ok    ' if ok else 'FAILED'} {name}: {detail}")
        return bool(ok)

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


def check_identical(engine: SegmentationEngine, other: SegmentationEngine, frames: Sequence[np.ndarray]
                    ) -> tuple[bool, str]:
    mean, worst = agreement([engine.infer(f).labels for f in frames], [other.infer(f).labels for f in frames])
    if worst == 1.0:
        return True, f"{len(frames)} frames bit-identical"
    return False, f"not bit-identical: {100 * mean:.4f}% equal pixels (worst frame {100 * worst:.4f}%)"


def other_size(size: tuple[int, int]) -> tuple[int, int]:
    """Twice the frame size, or half of it for large frames: the frame size a camera may switch to."""
    height, width = size
    return (2 * height, 2 * width) if 4 * height * width <= 1024 * 2048 else (height // 2, width // 2)


def check_size_changes(engine: SegmentationEngine, plain: SegmentationEngine | None, eager: torch.nn.Module,
                       info: WeightsInfo, size: tuple[int, int]) -> tuple[bool, str]:
    """Frames of size, other size, size, ... through infer and a pipeline: right against the eager model,
    bit-identical to the engine without CUDA graphs (``plain``), the pipeline's equal to infer's."""
    sizes = [size, other_size(size), size, other_size(size), size]
    frames = [gpu_models.make_frames(1, *s, seed=50 + index)[0] for index, s in enumerate(sizes)]
    labels = [engine.infer(frame).labels for frame in frames]
    reference = [gpu_models.reference_labels(eager, info, frame, engine.network_size, engine.device)
                 for frame in frames]
    need = AGREEMENT[engine.precision]
    problems = [f"{size_text(s)}: {100 * agreement([a], [b])[0]:.3f}% equal to eager (need {100 * need:g}%)"
                for s, a, b in zip(sizes, labels, reference, strict=True) if agreement([a], [b])[0] < need]
    if plain is not None:
        problems += [f"{size_text(s)}: not bit-identical to the engine without CUDA graphs"
                     for s, a, f in zip(sizes, labels, frames, strict=True)
                     if not np.array_equal(a, plain.infer(f).labels)]
    with gpu_pipeline.Feeder(engine) as feeder:
        feeder.run([(frame, index, "default") for index, frame in enumerate(frames)])
    problems += [f"pipeline frame {o.tag}: {o.error!r}" if o.error else f"pipeline frame {o.tag} differs from infer"
                 for o in feeder.outcomes if o.error is not None or not np.array_equal(o.labels, labels[o.tag])]
    sequence = " -> ".join(size_text(s) for s in sizes)
    return not problems, "; ".join(problems[:4]) or f"{sequence}: infer and pipeline right" + (
        ", bit-identical to plain" if plain is not None else "")


def build_engine(run: Run, model: torch.nn.Module, info: WeightsInfo, label: str, device: str, precision: str,
                 size: tuple[int, int], graphs: bool, threads: int | None) -> SegmentationEngine | None:
    config = EngineConfig(backend="torch", device=device, precision=precision, network_size=tuple(size),
                          cuda_graphs=graphs, threads=threads)
    built: list[SegmentationEngine] = []

    def build() -> tuple[bool, str]:
        start = time.perf_counter()
        built.append(create_engine_from_model(model, info, config))
        return True, f"{built[0].describe()} in {time.perf_counter() - start:.1f} s"

    run.check(f"{label} engine builds", build)
    return built[0] if built else None


def check_model_size(run: Run, name: str, model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module,
                     size: tuple[int, int], device: str, precisions: Sequence[str], plan: Plan, timing: bool,
                     threads: int | None) -> None:
    """Every check, then every timing row, of one model at one frame size."""
    where = f"{name} {size_text(size)}"
    frames = gpu_models.make_frames(plan.labels, *size, seed=7)
    reference = [gpu_models.reference_labels(eager, info, frame, size, device) for frame in frames]
    cuda = device == "cuda"
    engines: dict[tuple[str, bool], SegmentationEngine] = {}
    try:
        for precision in precisions:
            for graphs in (False, True) if cuda else (False,):
                label = f"{where} {precision}{' graphs' if graphs else ''}"
                engine = build_engine(run, model, info, label, device, precision, size, graphs, threads)
                if engine is None:
                    continue
                engines[(precision, graphs)] = engine
                run.check(f"{label} labels vs eager fp32", check_labels, engine, frames, reference)
                if graphs and (precision, False) in engines:
                    run.check(f"{label} bit-identical to plain", check_identical, engine,
                              engines[(precision, False)], frames)
        product = precisions[-1]  # fp16 on CUDA: what precision auto runs there
        if (product, cuda) in engines:
            run.check(f"{where} {product}{' graphs' if cuda else ''} frame-size changes", check_size_changes,
                      engines[(product, cuda)], engines.get((product, False)) if cuda else None, eager, info, size)
        for graphs in (False, True) if cuda else (False,):
            engine = engines.get((product, graphs))
            if engine is None:
                continue
            label = f"{where} {product}{' graphs' if graphs else ''} pipeline"
            expected = [engine.infer(frame).labels for frame in frames]
            run.check(f"{label} order and bit-identity", gpu_pipeline.check_order_and_identity, engine, frames,
                      expected, plan.pipeline)
            run.check(f"{label} bad frames fail alone", gpu_pipeline.check_error_isolation, engine, frames, expected,
                      plan.pipeline)
            run.check(f"{label} close() under load", gpu_pipeline.check_close_under_load, engine, frames, expected)
            run.check(f"{label} no memory growth", gpu_pipeline.check_memory, engine, frames, plan.memory,
                      plan.memory_warmup)
            if cuda:
                run.check(f"{label} no hidden synchronisation", gpu_pipeline.check_no_hidden_sync, engine, frames,
                          plan.sync)
        if timing:
            time_rows(run, name, eager, info, frames, device, engines, precisions, plan)
    finally:
        for engine in engines.values():
            engine.close()
        engines.clear()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def time_rows(run: Run, name: str, eager: torch.nn.Module, info: WeightsInfo, frames: Sequence[np.ndarray],
              device: str, engines: dict[tuple[str, bool], SegmentationEngine], precisions: Sequence[str],
              plan: Plan) -> None:
    size = f"{frames[0].shape[0]}x{frames[0].shape[1]}"
    jobs: list[tuple[str, Callable[[], Row]]] = []
    naive = gpu_models.naive_segmenter(eager, info, device)
    naive_budget = RowBudget(plan.rows.seconds, min(2, plan.rows.warmup), min(3, plan.rows.minimum), plan.rows.maximum)
    jobs.append(("fp32 naive", lambda: gpu_timing.naive_row(naive, name, frames, device, naive_budget)))
    for precision in precisions:
        for graphs in (False, True):
            engine = engines.get((precision, graphs))
            for mode in ("synchronous", "pipelined") if engine is not None else ():
                mode = f"graphs-{mode}" if graphs else mode
                jobs.append((f"{precision} {mode}", lambda engine=engine, mode=mode: gpu_timing.engine_row(
                    engine, name, frames, mode, plan.rows)))
    for what, job in jobs:
        if not run.time_left():
            run.skipped.append(f"{name} {size} {what}: the time budget was spent")
            continue
        try:
            row = job()
        except Exception as error:  # a row that cannot be measured is reported, not fatal
            run.skipped.append(f"{name} {size} {what}: {describe_error(error)}")
            run.say(f"row {name} {size} {what} skipped: {describe_error(error)}")
            continue
        run.rows.append(row)
        run.say(f"row {name} {size} {what}: {row.fps:.1f} fps, p50 {row.latency_ms_p50:.2f} ms ({row.frames} frames)")


@contextmanager
def numerics(device: str, tf32: bool, cudnn_benchmark: bool) -> Iterator[dict[str, Any]]:
    """fp32 as fp32 (TF32 off, unless ``tf32``) and cuDNN autotuning as asked, for the run; restored after."""
    settings: dict[str, Any] = {"tf32": False, "cudnn_benchmark": False}
    if device != "cuda":
        yield settings
        return
    saved = None
    try:  # the legacy flags only: mixing them with torch's newer fp32_precision API is an error
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = cudnn_benchmark
        settings.update(tf32=tf32, cudnn_benchmark=cudnn_benchmark)
    except Exception as error:  # run with torch's settings, and say so
        settings.update(tf32=f"torch default (could not set: {error})", cudnn_benchmark="torch default")
    try:
        yield settings
    finally:
        if saved is not None:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[0], saved[1]
            torch.backends.cudnn.benchmark = saved[2]


def load(name: str, device: str, loaded: list[Any]) -> tuple[bool, str]:
    """Load ``name`` (shipped weights, else random ones) and its eager fp32 copy on ``device`` into ``loaded``."""
    model, info, source = gpu_models.load_model(name)
    loaded += [model, info, gpu_models.eager_copy(model, device)]
    return True, source


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def run_checks(device: str = "cuda", models: Sequence[str] = gpu_models.MODELS,
               sizes: Sequence[tuple[int, int]] = SIZES, precisions: Sequence[str] | None = None,
               plan: Plan = FULL, timing: bool = True, budget_s: float = BUDGET_S, threads: int | None = None,
               tf32: bool = False, cudnn_benchmark: bool = False,
               say: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Every check and timing row for ``models`` x ``sizes`` on ``device``; the report (see gpu_report)."""
    precisions = tuple(precisions or (("fp32", "fp16") if device == "cuda" else ("fp32",)))
    run = Run(budget_s, say)
    weights: dict[str, str] = {}
    saved_threads = torch.get_num_threads()
    with numerics(device, tf32, cudnn_benchmark) as settings:
        try:
            for name in models:
                loaded: list[Any] = []
                if not run.check(f"{name} weights load", load, name, device, loaded):
                    continue
                model, info, eager = loaded
                weights[name] = run.checks[-1].detail
                for size in sizes:
                    try:
                        check_model_size(run, name, model, info, eager, tuple(size), device, precisions, plan,
                                         timing, threads)
                    except Exception as error:  # outside any one check (frames, reference): this size fails
                        run.check(f"{name} {size_text(size)} runs", lambda error=error: (False, describe_error(error)))
                del loaded, eager
        finally:
            torch.set_num_threads(saved_threads)
    settings.update(budget_s=budget_s, row_seconds=plan.rows.seconds)
    return build_report(
        device_name(device), torch.__version__, torch.version.cuda or "none", run.checks, run.rows,
        seconds=round(time.monotonic() - run.started, 1), settings=settings, weights=weights, skipped=run.skipped,
        python=platform.python_version(), numpy=np.__version__, host=platform.node(),
        generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def build_parser(prog: str = PROG, formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter
                 ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=formatter_class)
    parser.add_argument("--out", type=Path, default=Path("docs/gpu"), help="folder for <gpu-name>.json and .md")
    parser.add_argument("--quick", action="store_true", help="fewer frames and shorter timing rows (about 2 min)")
    parser.add_argument("--models", default=",".join(gpu_models.MODELS), help="comma-separated: cgnet,contextnet")
    parser.add_argument("--sizes", type=parse_sizes, default=",".join(size_text(s) for s in SIZES),
                        help="comma-separated HEIGHTxWIDTH frame sizes (the network runs at the frame size)")
    parser.add_argument("--no-timing", dest="timing", action="store_false", help="checks only, no timing rows")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run; timing rows "
                        "still to come when it is spent are skipped")
    parser.add_argument("--tf32", action="store_true", help="let fp32 convolutions use TF32 (default: true fp32)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: run the device-independent checks on the CPU, as the tests do")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG,
         formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> int:
    parser = build_parser(prog, formatter_class)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in gpu_models.MODELS]
    if unknown:
        parser.error(f"unknown model {unknown}; choose from {list(gpu_models.MODELS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return EXIT_NO_CUDA
    report = run_checks(args.device, models, args.sizes, plan=QUICK if args.quick else FULL, timing=args.timing,
                        budget_s=args.budget, tf32=args.tf32, cudnn_benchmark=args.cudnn_benchmark,
                        say=lambda text: print(text, flush=True))
    report["settings"]["quick"] = args.quick
    problems = validate_report(report)
    json_path, md_path = write_report(report, args.out)
    print()
    print(markdown(report), end="")
    print(f"wrote {json_path} and {md_path} in {report['seconds']:.0f} s")
    if problems:
        print(f"{prog}: the report does not fit its shape: {problems}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if report["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
