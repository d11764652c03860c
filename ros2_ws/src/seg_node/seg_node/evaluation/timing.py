"""The one timing harness of the engine: host uint8 frame in, host uint8 labels out, per frame.

``time_engine(engine, frames, TimingSettings(...)) -> TimingResult`` is the call every speed figure comes
from (``seg-gpu-check``'s rows, ``seg-bench``, ``ros_tools.measure``'s engine timing). A measurement runs
its warm-up, then frames until its time share is spent (at least ``minimum``, at most ``maximum``
frames; ``seconds`` 0 runs exactly ``minimum``): ``synchronous`` calls ``engine.infer`` frame after
frame, ``pipelined`` keeps a FramePipeline busy (``gpu_pipeline.Feeder``, three frames in flight on
CUDA, two on CPU) or, with ``camera_fps``, submits at that rate like a camera (stale frames drop).
``time_calls`` times any per-frame function the same way (the naive rows). fps = frames / wall time;
latency = per call (synchronous, naive) or submit to result (pipelined).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch

from ..engine import EngineError, SegmentationEngine
from .gpu_pipeline import Feeder, cycle
from .gpu_report import Row

IN_FLIGHT = {"cpu": 2, "cuda": 3}  # one prepared while one runs; on CUDA also one copying back
MODES = ("synchronous", "pipelined")


@dataclass(frozen=True)
class TimingSettings:
    """How one measurement runs."""

    mode: str = "synchronous"  # or "pipelined"
    seconds: float = 2.5  # measuring time, after the warm-up; 0: exactly ``minimum`` frames
    warmup: int = 5
    minimum: int = 5
    maximum: int = 5000
    color_order: str = "rgb"  # of the frames: "bgr" as from a camera driver
    camera_fps: float = 0.0  # pipelined: submit at this rate (0: keep the pipeline full)
    first: int = 0  # index of the first frame measured, so that repeated measurements move through the frames


@dataclass
class TimingResult:
    """Per-frame latencies (seconds) and the wall time they took."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    dropped: int = 0

    @property
    def frames(self) -> int:
        return len(self.latencies)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, percent: float) -> float:
        return float(np.percentile(1000.0 * np.asarray(self.latencies, dtype=np.float64), percent))

    def add(self, other: TimingResult) -> None:
        """Pool ``other`` into this result (measurements taken in rounds)."""
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.dropped += other.dropped


def _measuring(settings: TimingSettings, count: int, started: float) -> bool:
    if count >= settings.maximum:
        return False
    return count < settings.minimum or (settings.seconds > 0 and time.perf_counter() - started < settings.seconds)


def time_calls(segment: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], settings: TimingSettings,
               synchronize: Callable[[], None]) -> TimingResult:
    """Call ``segment`` frame after frame."""
    for index in range(settings.warmup):
        segment(frames[index % len(frames)])
    synchronize()
    result = TimingResult()
    start = time.perf_counter()
    while _measuring(settings, result.frames, start):
        begin = time.perf_counter()
        segment(frames[(settings.first + result.frames) % len(frames)])
        result.latencies.append(time.perf_counter() - begin)
    synchronize()
    result.seconds = time.perf_counter() - start
    return result


def time_pipelined(engine: SegmentationEngine, frames: Sequence[np.ndarray], settings: TimingSettings
                   ) -> TimingResult:
    """Keep a FramePipeline busy, or feed it at ``camera_fps``; submit-to-result latencies."""
    interval = 1.0 / settings.camera_fps if settings.camera_fps > 0 else 0.0
    measured = settings.maximum if settings.seconds > 0 else settings.minimum
    with Feeder(engine, depth=IN_FLIGHT.get(engine.device, 2), keep_labels=False,
                color_order=settings.color_order) as feeder:
        feeder.run(cycle(frames, settings.warmup))
        feeder.outcomes.clear()
        dropped_before = feeder.pipeline.stats().dropped
        _, seconds = feeder.run(cycle(frames, measured, first=settings.first), seconds=settings.seconds or None,
                                minimum=settings.minimum, interval=interval)
        dropped = feeder.pipeline.stats().dropped - dropped_before
        failed = [outcome.error for outcome in feeder.outcomes if outcome.error is not None]
        latencies = [outcome.latency for outcome in feeder.outcomes if outcome.error is None]
    if failed:
        raise EngineError(f"{len(failed)} frames failed in the pipeline, the first: {failed[0]!r}")
    return TimingResult(latencies, seconds, dropped)


def time_engine(engine: SegmentationEngine, frames: Sequence[np.ndarray], settings: TimingSettings) -> TimingResult:
    """Time ``engine`` on ``frames`` as ``settings`` say (the module's docstring)."""
    if settings.mode == "pipelined":
        return time_pipelined(engine, frames, settings)
    if settings.mode == "synchronous":
        return time_calls(partial(engine.infer, color_order=settings.color_order), frames, settings,
                          engine.synchronize)
    raise ValueError(f"timing mode {settings.mode!r}; choose from {MODES}")


def row(model: str, size: str, backend: str, precision: str, mode: str, cuda_graphs: bool, result: TimingResult
        ) -> Row:
    """A GPU check report row of ``result``."""
    return Row(model, size, backend, precision, mode, round(result.fps, 2), round(result.percentile_ms(50), 3),
               round(result.percentile_ms(99), 3), result.frames, cuda_graphs)


def engine_row(engine: SegmentationEngine, model: str, frames: Sequence[np.ndarray], mode: str,
               settings: TimingSettings) -> Row:
    """A ``synchronous`` or ``pipelined`` row (``graphs-`` prefixed for an engine with CUDA graphs)."""
    size = f"{frames[0].shape[0]}x{frames[0].shape[1]}"
    graphs = bool(engine.config.cuda_graphs) and engine.backend_name == "torch"
    result = time_engine(engine, frames, replace(settings, mode="pipelined" if mode.endswith("pipelined")
                                                 else "synchronous"))
    return row(model, size, engine.backend_name, engine.precision, mode, graphs, result)


def naive_row(segment: Callable[[np.ndarray], object], model: str, frames: Sequence[np.ndarray], device: str,
              settings: TimingSettings) -> Row:
    size = f"{frames[0].shape[0]}x{frames[0].shape[1]}"
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return row(model, size, "torch", "fp32", "naive", False, time_calls(segment, frames, settings, synchronize))
