"""seg-gpu-check: prove and measure the engine's CUDA path on an NVIDIA GPU, in at most 10 minutes.

    seg-gpu-check [--out DIR] [--quick]        (DIR: $OUT where set, as on a lent GPU, else docs/gpu)

For CGNet and ContextNet at 360x480 and 1024x2048 (network input = frame size) it checks the torch
backend on CUDA: labels against the eager fp32 model (>= 99.9% equal pixels at fp32, >= 99% at fp16),
CUDA graphs bit-identical to plain, frame-size changes under CUDA graphs, and the FramePipeline (order per
stream, bit-identity with infer, a bad frame failing alone, close() under load, no memory growth over 200
frames, a steady state without synchronising torch calls or new CUDA allocations), and the node's other
path: BGR frames of another size with the confidence map on and maps at network size. Where torch2trt
imports (as in both images, where backend auto picks it) the same checks run on the torch2trt backend at
fp16. Then it times naive, synchronous, pipelined and CUDA-graph rows at fp32 and fp16 (and torch2trt's).

The report, ``<out>/<gpu-name>.json`` and ``.md``, is rewritten after every check and every row, so a run
cut off by a command's time limit still leaves what it found; the time budget is checked before each
model, each size and each row (what it skips is listed). Needs only PyTorch with CUDA and NumPy; the
shipped weights when present (random ones otherwise). Exit status (``seg_node.cli.gpu_check``): 0 all checks
passed, 1 a check failed, 2 no CUDA device. Speed targets are reported, not enforced. Device ``cpu``
runs the device-independent checks on the CPU (as the tests do).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import EngineConfig, SegmentationEngine
from ..engine.resolve import torch2trt_missing
from ..weights import WeightsInfo
from . import gpu_models, gpu_pipeline, timing
from .gpu_report import Row, build_report, size_text, write_report
from .gpu_run import (
    AGREEMENT,
    FULL,
    Plan,
    Run,
    agreement,
    build_engine,
    check_bgr_confidence,
    check_labels,
    check_pipeline,
    close_all,
    describe_error,
    other_size,
    time_rows,
)
from .gpu_torch2trt import torch2trt_section

SIZES = ((360, 480), (1024, 2048))
BUDGET_S = 540.0  # the whole run; what is left when it is spent is skipped (and listed)


def default_out() -> Path:
    """``$OUT`` where set (the folder a lent GPU machine sends back), else ``docs/gpu`` (where reports are kept)."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("docs/gpu")


@dataclass
class GpuCheckSettings:
    """What one seg-gpu-check run does (its flags, same names)."""

    device: str = "cuda"
    models: Sequence[str] = gpu_models.MODELS
    sizes: Sequence[tuple[int, int]] = SIZES
    precisions: Sequence[str] | None = None  # None: fp32 and fp16 on CUDA, fp32 on CPU
    plan: Plan = FULL
    timing: bool = True
    budget_s: float = BUDGET_S
    threads: int | None = None
    tf32: bool = False
    cudnn_benchmark: bool = False
    out: Path | None = None  # where the report is rewritten after every check and row; None: nowhere
    torch2trt: bool = True  # the torch2trt section, where torch2trt imports (and on CUDA only)


def check_identical(engine: SegmentationEngine, other: SegmentationEngine, frames: Sequence[np.ndarray]
                    ) -> tuple[bool, str]:
    mean, worst = agreement([engine.infer(f).labels for f in frames], [other.infer(f).labels for f in frames])
    if worst == 1.0:
        return True, f"{len(frames)} frames bit-identical"
    return False, f"not bit-identical: {100 * mean:.4f}% equal pixels (worst frame {100 * worst:.4f}%)"


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


def check_model_size(run: Run, name: str, model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module,
                     size: tuple[int, int], settings: GpuCheckSettings) -> None:
    """Every check, then every timing row, of one model at one frame size on the torch backend."""
    device, plan = settings.device, settings.plan
    precisions = tuple(settings.precisions or (("fp32", "fp16") if device == "cuda" else ("fp32",)))
    where = f"{name} {size_text(size)}"
    frames = gpu_models.make_frames(plan.labels, *size, seed=7)
    reference = [gpu_models.reference_labels(eager, info, frame, size, device) for frame in frames]
    cuda = device == "cuda"
    engines: dict[tuple[str, bool], SegmentationEngine] = {}
    try:
        for precision in precisions:
            for graphs in (False, True) if cuda else (False,):
                label = f"{where} {precision}{' graphs' if graphs else ''}"
                config = EngineConfig(backend="torch", device=device, precision=precision, network_size=tuple(size),
                                      cuda_graphs=graphs, threads=settings.threads)
                engine = build_engine(run, model, info, label, config)
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
            if (product, graphs) in engines:
                check_pipeline(run, f"{where} {product}{' graphs' if graphs else ''}", engines[(product, graphs)],
                               frames, plan)
        if (product, False) in engines:
            check_bgr_confidence(run, f"{where} {product}", model, info, eager, engines[(product, False)].config, plan)
        if settings.timing:
            naive = gpu_models.naive_segmenter(eager, info, device)
            naive_settings = replace(plan.rows, warmup=min(2, plan.rows.warmup), minimum=min(3, plan.rows.minimum))
            jobs: list[tuple[str, Callable[[], Row]]] = [
                ("fp32 naive", lambda: timing.naive_row(naive, name, frames, device, naive_settings))]
            for (precision, graphs), engine in engines.items():
                for mode in ("synchronous", "pipelined"):
                    mode = f"graphs-{mode}" if graphs else mode
                    jobs.append((f"torch {precision} {mode}", lambda engine=engine, mode=mode: timing.engine_row(
                        engine, name, frames, mode, plan.rows)))
            time_rows(run, where, jobs)
    finally:
        close_all(engines.values(), cuda)


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


def run_checks(settings: GpuCheckSettings, say: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Every check and timing row of ``settings``; the report (see gpu_report), also written to
    ``settings.out`` after every check and row."""
    device, plan = settings.device, settings.plan
    if not settings.torch2trt:
        torch2trt_skipped: str | None = "--no-torch2trt"
    elif device == "cuda":
        torch2trt_skipped = torch2trt_missing()
    else:
        torch2trt_skipped = "the torch2trt backend runs on CUDA only"
    weights: dict[str, str] = {}
    saved_threads = torch.get_num_threads()
    with numerics(device, settings.tf32, settings.cudnn_benchmark) as numeric_settings:
        numeric_settings.update(budget_s=settings.budget_s, row_seconds=plan.rows.seconds)

        def describe(run: Run) -> dict[str, Any]:
            return build_report(
                device_name(device), torch.__version__, torch.version.cuda or "none", run.checks, run.rows,
                seconds=round(time.monotonic() - run.started, 1), settings=numeric_settings, weights=weights,
                skipped=run.skipped, complete=False, python=platform.python_version(), numpy=np.__version__,
                host=platform.node(), generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

        run = Run(settings.budget_s, say, settings.out, describe)
        if torch2trt_skipped is not None and settings.torch2trt:
            run.skip("the torch2trt section", torch2trt_skipped)
        try:
            for name in settings.models:
                if not run.time_left():
                    run.skip(name, "the time budget was spent before it started")
                    continue
                loaded: list[Any] = []
                if not run.check(f"{name} weights load", load, name, device, loaded):
                    continue
                model, info, eager = loaded
                weights[name] = run.checks[-1].detail
                for index, size in enumerate(settings.sizes):
                    sections: list[tuple[str, Callable[[], None]]] = [("torch", partial(
                        check_model_size, run, name, model, info, eager, tuple(size), settings))]
                    if torch2trt_skipped is None:
                        sections.append(("torch2trt", partial(torch2trt_section, run, name, model, info, eager,
                                                               tuple(size), plan, settings.timing, index == 0)))
                    for backend, section in sections:
                        where = f"{name} {size_text(size)} {backend}"
                        if not run.time_left():
                            run.skip(where, "the time budget was spent before it started")
                            continue
                        try:
                            section()
                        except Exception as error:  # outside any one check (frames, reference): this part fails
                            run.check(f"{where} runs", lambda error=error: (False, describe_error(error)))
                del loaded, eager
        finally:
            torch.set_num_threads(saved_threads)
        report = run.report()
        report["complete"] = True
        if settings.out is not None:
            run.written = write_report(report, settings.out)
    return report
