"""Timing rows of the GPU check: host uint8 frame in, host uint8 labels out, per frame.

Every row runs its warm-up, then frames until its time share is spent (at least ``minimum``, at most
``maximum`` frames): ``synchronous`` calls ``engine.infer`` frame after frame, ``pipelined`` keeps a
FramePipeline busy (``gpu_pipeline.Feeder``, three frames in flight on CUDA, two on CPU), ``naive`` runs
``gpu_models.naive_segmenter``. fps = frames / wall time; latency = per call (synchronous, naive) or
submit to result (pipelined).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import SegmentationEngine
from .gpu_pipeline import Feeder, cycle
from .gpu_report import Row

IN_FLIGHT = {"cpu": 2, "cuda": 3}  # one prepared while one runs; on CUDA also one copying back


@dataclass(frozen=True)
class RowBudget:
    seconds: float = 2.5  # measuring time per row, after its warm-up
    warmup: int = 5
    minimum: int = 5
    maximum: int = 5000


def summarise(latencies: Sequence[float], seconds: float) -> tuple[float, float, float]:
    """(fps, p50 ms, p99 ms)."""
    milliseconds = 1000.0 * np.asarray(latencies, dtype=np.float64)
    fps = len(latencies) / seconds if seconds > 0 else 0.0
    return fps, float(np.percentile(milliseconds, 50)), float(np.percentile(milliseconds, 99))


def time_calls(segment: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], budget: RowBudget,
               synchronize: Callable[[], None]) -> tuple[list[float], float]:
    """Call ``segment`` frame after frame; (latencies, wall seconds)."""
    for index in range(budget.warmup):
        segment(frames[index % len(frames)])
    synchronize()
    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < budget.maximum and (
            len(latencies) < budget.minimum or time.perf_counter() - start < budget.seconds):
        begin = time.perf_counter()
        segment(frames[len(latencies) % len(frames)])
        latencies.append(time.perf_counter() - begin)
    synchronize()
    return latencies, time.perf_counter() - start


def time_pipelined(engine: SegmentationEngine, frames: Sequence[np.ndarray], budget: RowBudget
                   ) -> tuple[list[float], float]:
    """Keep a FramePipeline busy; (submit-to-result latencies, wall seconds)."""
    with Feeder(engine, depth=IN_FLIGHT.get(engine.device, 2), keep_labels=False) as feeder:
        feeder.run(cycle(frames, budget.warmup))
        feeder.outcomes.clear()
        _, seconds = feeder.run(cycle(frames, budget.maximum), seconds=budget.seconds, minimum=budget.minimum)
        failed = [outcome.error for outcome in feeder.outcomes if outcome.error is not None]
        latencies = [outcome.latency for outcome in feeder.outcomes]
    if failed:
        raise RuntimeError(f"{len(failed)} frames failed in the pipeline, the first: {failed[0]!r}")
    return latencies, seconds


def measure(model: str, size: str, precision: str, mode: str, cuda_graphs: bool, latencies: Sequence[float],
            seconds: float) -> Row:
    fps, p50, p99 = summarise(latencies, seconds)
    return Row(model, size, "torch", precision, mode, round(fps, 2), round(p50, 3), round(p99, 3),
               len(latencies), cuda_graphs)


def engine_row(engine: SegmentationEngine, model: str, frames: Sequence[np.ndarray], mode: str, budget: RowBudget
               ) -> Row:
    """A ``synchronous`` or ``pipelined`` row (``graphs-`` prefixed for an engine with CUDA graphs)."""
    size = f"{frames[0].shape[0]}x{frames[0].shape[1]}"
    graphs = bool(engine.config.cuda_graphs)
    if mode.endswith("pipelined"):
        latencies, seconds = time_pipelined(engine, frames, budget)
    else:
        latencies, seconds = time_calls(engine.infer, frames, budget, engine.synchronize)
    return measure(model, size, engine.precision, mode, graphs, latencies, seconds)


def naive_row(segment: Callable[[np.ndarray], object], model: str, frames: Sequence[np.ndarray], device: str,
              budget: RowBudget) -> Row:
    size = f"{frames[0].shape[0]}x{frames[0].shape[1]}"
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    latencies, seconds = time_calls(segment, frames, budget, synchronize)
    return measure(model, size, "fp32", "naive", False, latencies, seconds)
