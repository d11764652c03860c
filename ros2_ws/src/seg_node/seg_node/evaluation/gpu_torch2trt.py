"""The GPU check's torch2trt section: the backend that ``auto`` runs wherever torch2trt imports (both images).

``check_torch2trt`` builds it at fp16 (the build compares the engine's labels with torch's), then checks
labels against the eager model, the pipeline, the BGR + confidence path and times it. ``check_auto``
proves that backend auto picks torch2trt here, and that a failed TensorRT build falls back to the torch
backend on CUDA, whose labels are still right: the build is made to fail by replacing
``tensorrt_build.convert`` for that one engine, in an empty engine cache.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..engine import EngineBuildError, EngineConfig, create_engine_from_model
from ..engine.backends import tensorrt_build
from ..weights import WeightsInfo
from . import gpu_models, timing
from .gpu_report import size_text
from .gpu_run import (
    AGREEMENT,
    Plan,
    Run,
    agreement,
    build_engine,
    check_bgr_confidence,
    check_labels,
    check_pipeline,
    close_all,
    time_rows,
)


def check_torch2trt(run: Run, name: str, model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module,
                    size: tuple[int, int], plan: Plan, timed: bool) -> None:
    """The torch2trt backend at fp16: build (and its comparison with torch), labels against eager, the
    pipeline, the BGR + confidence path, and (``timed``) its synchronous and pipelined rows."""
    where = f"{name} {size_text(size)} torch2trt fp16"
    frames = gpu_models.make_frames(plan.labels, *size, seed=7)
    reference = [gpu_models.reference_labels(eager, info, frame, size, "cuda") for frame in frames]
    config = EngineConfig(backend="torch2trt", device="cuda", precision="fp16", network_size=tuple(size))
    engine = build_engine(run, model, info, where, config)
    if engine is None:
        return
    try:
        run.check(f"{where} labels vs eager fp32", check_labels, engine, frames, reference)
        check_pipeline(run, where, engine, frames, plan)
        check_bgr_confidence(run, where, model, info, eager, config, plan)
        if timed:
            time_rows(run, where, [
                (mode, lambda mode=mode: timing.engine_row(engine, name, frames, mode, plan.rows))
                for mode in ("synchronous", "pipelined")])
    finally:
        close_all([engine], True)


@contextmanager
def failing_tensorrt_builds() -> Iterator[None]:
    """TensorRT builds fail (EngineBuildError with a TensorRT-like log) while the block runs."""
    def convert(*_args: Any, **_kwargs: Any) -> None:
        raise EngineBuildError("TensorRT could not build the engine (made to fail by seg-gpu-check)",
                               ["[error] made to fail by seg-gpu-check"])

    saved = tensorrt_build.convert
    tensorrt_build.convert = convert
    try:
        yield
    finally:
        tensorrt_build.convert = saved


def check_auto(model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module, size: tuple[int, int],
               frames_count: int) -> tuple[bool, str]:
    """Backend auto picks torch2trt on CUDA; with a failing TensorRT build it falls back to torch on CUDA at
    fp16, with labels still right against the eager model."""
    frames = gpu_models.make_frames(frames_count, *size, seed=21)
    reference = [gpu_models.reference_labels(eager, info, frame, size, "cuda") for frame in frames]
    config = EngineConfig(backend="auto", device="auto", precision="auto", network_size=tuple(size))
    problems, parts = [], []
    with create_engine_from_model(model, info, config) as engine:
        chosen = (engine.backend_name, engine.device, engine.precision)
        parts.append(f"auto runs {'/'.join(chosen)}")
        if chosen != ("torch2trt", "cuda", "fp16"):
            problems.append(f"backend auto chose {'/'.join(chosen)}, not torch2trt/cuda/fp16")
    with tempfile.TemporaryDirectory(prefix="seg-gpu-check-") as cache, failing_tensorrt_builds():
        fallback_config = EngineConfig(backend="auto", device="auto", precision="auto", network_size=tuple(size),
                                       engine_cache_dir=cache)
        with create_engine_from_model(model, info, fallback_config) as engine:
            chosen = (engine.backend_name, engine.device, engine.precision)
            mean, worst = agreement([engine.infer(frame).labels for frame in frames], reference)
    parts.append(f"a failed build falls back to {'/'.join(chosen)}, {100 * mean:.3f}% equal to eager")
    if chosen != ("torch", "cuda", "fp16"):
        problems.append(f"after a failed TensorRT build auto runs {'/'.join(chosen)}, not torch/cuda/fp16")
    if mean < AGREEMENT["fp16"]:
        problems.append(f"the fallback's labels are {100 * mean:.3f}% equal to eager (worst frame "
                        f"{100 * worst:.3f}%)")
    return not problems, "; ".join(problems) or "; ".join(parts)


def torch2trt_section(run: Run, name: str, model: torch.nn.Module, info: WeightsInfo, eager: torch.nn.Module,
                      size: tuple[int, int], plan: Plan, timed: bool, first_size: bool) -> None:
    """``check_auto`` (at the first size only: it builds twice) and ``check_torch2trt``."""
    if first_size:
        run.check(f"{name} {size_text(size)} backend auto: torch2trt, and torch after a failed build", check_auto,
                  model, info, eager, size, plan.labels)
    check_torch2trt(run, name, model, info, eager, size, plan, timed)
