"""The GPU check's tests of FramePipeline on any device: order, bit-identity, error isolation, close, memory, syncs.

``Feeder`` drives a pipeline the way a benchmark does: at most ``depth`` frames in flight and never a
frame left waiting when the next is submitted, so none is dropped and every submitted frame has a result.
Each ``check_*`` function returns ``(ok, detail)``; the caller names the check.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..engine import EngineError, SegmentationEngine, SegResult

RESULT_TIMEOUT_S = 60.0
CLOSE_LIMIT_S = 1.5
PIPELINE_THREADS = ("seg-prepare_loop", "seg-execute_loop", "seg-collect_loop")  # FramePipeline's thread names
SUBMIT_LIMIT_MS = 1.0  # median time of submit() while the pipeline is busy
Item = tuple[np.ndarray, Any, str]  # (frame, tag, stream)


@dataclass
class Outcome:
    tag: Any
    stream: str
    labels: np.ndarray | None
    error: Exception | None
    latency: float  # seconds from submit to result
    confidence: np.ndarray | None = None


@dataclass
class Feeder:
    """A FramePipeline of ``engine``, fed with back-pressure; results gather in ``outcomes``."""

    engine: SegmentationEngine
    depth: int = 3
    keep_labels: bool = True
    color_order: str = "rgb"
    outcomes: list[Outcome] = field(default_factory=list)
    submit_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._delivered = 0
        self._submitted = 0
        self.pipeline = self.engine.pipeline(on_result=self._on_result)

    def _on_result(self, result: SegResult) -> None:
        labels = result.labels if self.keep_labels else None
        confidence = result.confidence if self.keep_labels else None
        outcome = Outcome(result.tag, result.stream, labels, result.error, result.timings.get("total", 0.0),
                          confidence)
        with self._changed:
            self.outcomes.append(outcome)
            self._delivered += 1
            self._changed.notify_all()

    def _wait(self, condition: Any, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout=RESULT_TIMEOUT_S):
                raise TimeoutError(f"{what}: {self._delivered} of {self._submitted} results after {RESULT_TIMEOUT_S} s")

    def run(self, items: Sequence[Item], seconds: float | None = None, minimum: int = 0, interval: float = 0.0
            ) -> tuple[int, float]:
        """Submit ``items`` in turn (stopping after ``seconds`` once ``minimum`` went in), wait for their
        results; (frames submitted, wall seconds from the first submit to the last result). With
        ``interval`` > 0 frames go in at that pace, like a camera's, and a frame still waiting is replaced
        (dropped) rather than waited for."""
        start = time.perf_counter()
        count = 0
        for frame, tag, stream in items:
            if seconds is not None and count >= minimum and time.perf_counter() - start > seconds:
                break
            if interval > 0:
                time.sleep(max(0.0, start + count * interval - time.perf_counter()))
            else:
                self._wait_for_room()
            begin = time.perf_counter()
            self.pipeline.submit(frame, tag=tag, stream=stream, color_order=self.color_order)
            self.submit_seconds.append(time.perf_counter() - begin)
            with self._changed:
                self._submitted += 1
            count += 1
        self._wait(lambda: self._delivered + self.pipeline.stats().dropped >= self._submitted, "results missing")
        return count, time.perf_counter() - start

    def _wait_for_room(self) -> None:
        """Until fewer than ``depth`` frames are in flight and none waits to be taken (a new one would replace it)."""
        self._wait(lambda: self._submitted - self._delivered < self.depth, "pipeline stalled")
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while self.pipeline.stats().waiting:  # just after a result: a new frame would replace the waiting one
            if time.monotonic() > deadline:
                raise TimeoutError("a frame stayed waiting in the pipeline")
            time.sleep(0.0002)

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def cycle(frames: Sequence[np.ndarray], count: int, streams: Sequence[str] = ("default",), first: int = 0
          ) -> list[Item]:
    """``count`` items over ``frames`` in turn from frame ``first``, streams in turn; the tag is (stream, index,
    frame index)."""
    items = []
    for index in range(count):
        stream = streams[index % len(streams)]
        which = (first + index) % len(frames)
        items.append((frames[which], (stream, index, which), stream))
    return items


def check_order_and_identity(engine: SegmentationEngine, frames: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                             count: int) -> tuple[bool, str]:
    """Two streams through the pipeline: each keeps its order, nothing drops, labels equal ``engine.infer``'s."""
    items = cycle(frames, count, ("left", "right"))
    with Feeder(engine) as feeder:
        feeder.run(items)
        stats = feeder.pipeline.stats()
    problems = []
    for stream in ("left", "right"):
        got = [outcome.tag[1] for outcome in feeder.outcomes if outcome.stream == stream]
        want = [tag[1] for _, tag, item_stream in items if item_stream == stream]
        if got != want:
            problems.append(f"stream {stream} came out as {got[:8]}..., submitted {want[:8]}...")
    errors = [outcome for outcome in feeder.outcomes if outcome.error is not None]
    differing = [outcome.tag[1] for outcome in feeder.outcomes
                 if outcome.error is None and not np.array_equal(outcome.labels, expected[outcome.tag[2]])]
    if errors:
        problems.append(f"{len(errors)} frames failed, the first: {errors[0].error!r}")
    if differing:
        problems.append(f"frames {differing[:8]} differ from engine.infer")
    if stats.dropped:
        problems.append(f"{stats.dropped} dropped although the feeder never left a frame waiting")
    summary = f"{len(feeder.outcomes)} results of {count} frames on 2 streams, in order and bit-identical to infer"
    return not problems, "; ".join(problems) or summary


def bad_frames(height: int, width: int) -> list[tuple[str, object]]:
    return [("float32 frame", np.zeros((height, width, 3), np.float32)),
            ("4-channel frame", np.zeros((height, width, 4), np.uint8)),
            ("1x1 frame", np.zeros((1, 1, 3), np.uint8)),
            ("not an array", [[0, 0, 0]])]


def check_error_isolation(engine: SegmentationEngine, frames: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                          count: int) -> tuple[bool, str]:
    """Bad frames among good ones: each bad one fails alone with an EngineError, every good one is right."""
    height, width = frames[0].shape[:2]
    items: list[Item] = []
    bad = bad_frames(height, width)
    for index, item in enumerate(cycle(frames, count)):
        items.append(item)
        if index % 3 == 1 and bad:
            what, frame = bad.pop(0)
            items.append((frame, ("bad", what), "default"))
    with Feeder(engine) as feeder:
        feeder.run(items)
    problems = []
    bad_results = [o for o in feeder.outcomes if o.tag[0] == "bad"]
    good_results = [o for o in feeder.outcomes if o.tag[0] != "bad"]
    for outcome in bad_results:
        if not isinstance(outcome.error, EngineError) or outcome.labels is not None:
            problems.append(f"{outcome.tag[1]} gave error {outcome.error!r}")
    for outcome in good_results:
        if outcome.error is not None or not np.array_equal(outcome.labels, expected[outcome.tag[2]]):
            problems.append(f"good frame {outcome.tag[1]} beside bad ones: error {outcome.error!r} or other labels")
    if len(bad_results) + len(good_results) != len(items):
        problems.append(f"{len(feeder.outcomes)} results for {len(items)} frames")
    summary = f"{len(bad_results)} bad frames failed alone (FrameError), {len(good_results)} good ones right"
    return not problems, "; ".join(problems[:4]) or summary


def live_pipeline_threads() -> int:
    return sum(thread.is_alive() and thread.name in PIPELINE_THREADS for thread in threading.enumerate())


def check_close_under_load(engine: SegmentationEngine, frames: Sequence[np.ndarray], expected: Sequence[np.ndarray]
                           ) -> tuple[bool, str]:
    """A feeder floods the pipeline; close() returns within CLOSE_LIMIT_S, its threads end, the engine works on."""
    before = live_pipeline_threads()
    delivered = threading.Semaphore(0)
    pipeline = engine.pipeline(on_result=lambda _result: delivered.release())
    stop = threading.Event()
    submitted = 0

    def flood() -> None:
        nonlocal submitted
        while not stop.is_set():
            try:
                pipeline.submit(frames[submitted % len(frames)], tag=submitted)
            except EngineError:  # closed: the expected end
                return
            submitted += 1
            time.sleep(0.0005)

    feeder = threading.Thread(target=flood, name="gpu-check-flood", daemon=True)
    feeder.start()
    try:
        for _ in range(3):  # under load: results are flowing
            if not delivered.acquire(timeout=RESULT_TIMEOUT_S):
                return False, "no results arrived while flooding the pipeline"
        start = time.perf_counter()
        pipeline.close()
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        pipeline.close()
        feeder.join(5.0)
    left = live_pipeline_threads() - before
    labels = engine.infer(frames[0]).labels
    problems = []
    if seconds > CLOSE_LIMIT_S:
        problems.append(f"close() took {seconds:.3f} s (limit {CLOSE_LIMIT_S} s)")
    if left > 0:
        problems.append(f"{left} pipeline threads still alive after close()")
    if feeder.is_alive():
        problems.append("submit() did not refuse frames after close()")
    if not np.array_equal(labels, expected[0]):
        problems.append("engine.infer after the pipeline closed gives other labels")
    return not problems, "; ".join(problems) or (
        f"close() under load in {1000 * seconds:.1f} ms after {submitted} submitted; threads ended, engine works on")


def host_rss() -> int | None:
    """Resident memory of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def device_allocated(device: str) -> int | None:
    """Bytes held by live tensors on the CUDA device after all work finished, else None (CPU)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    gc.collect()
    torch.empty(1, device="cuda")  # an allocation makes the caching allocator retire blocks whose events completed
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def check_memory(engine: SegmentationEngine, frames: Sequence[np.ndarray], count: int, warmup: int
                 ) -> tuple[bool, str]:
    """``count`` frames through one pipeline after ``warmup``: device memory and host RSS do not grow."""
    frame_bytes = frames[0].nbytes
    device_slack = max(1 << 20, 4 * frame_bytes)  # a leak of even a label map per frame is count x larger
    host_slack = max(24 << 20, 4 * frame_bytes)
    with Feeder(engine, keep_labels=False) as feeder:
        feeder.run(cycle(frames, warmup))
        feeder.outcomes.clear()
        gc.collect()
        device_before, host_before = device_allocated(engine.device), host_rss()
        if engine.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        feeder.run(cycle(frames, count))
        failed = sum(outcome.error is not None for outcome in feeder.outcomes)
        feeder.outcomes.clear()
        gc.collect()
        device_after, host_after = device_allocated(engine.device), host_rss()
        peak = torch.cuda.max_memory_allocated() if engine.device == "cuda" else None
    problems, parts = [], []
    if failed:
        problems.append(f"{failed} of {count} frames failed")
    if device_before is not None:
        growth = device_after - device_before
        parts.append(f"device {growth / 2**20:+.2f} MiB (peak {peak / 2**20:.0f} MiB)")
        if growth > device_slack:
            problems.append(f"device memory grew {growth / 2**20:.1f} MiB over {count} frames")
    if host_before is not None:
        growth = host_after - host_before
        parts.append(f"host RSS {growth / 2**20:+.1f} MiB")
        if growth > host_slack:
            problems.append(f"host RSS grew {growth / 2**20:.1f} MiB over {count} frames")
    summary = f"{count} frames after {warmup} warm-up: " + (", ".join(parts) or "nothing measurable here")
    return not problems, "; ".join(problems) or summary


def allocation_counts() -> dict[str, int]:
    """How often the CUDA caching allocators grew: cudaMalloc (device segments) and cudaHostAlloc (pinned host
    blocks, where this torch counts them). Both synchronise without passing torch's sync-debug hook."""
    counts = {"cudaMalloc": int(torch.cuda.memory_stats().get("segment.all.allocated", 0))}
    host_stats = getattr(torch.cuda, "host_memory_stats", None)
    if host_stats is not None:
        counts["cudaHostAlloc"] = int(host_stats().get("num_host_alloc", 0))
    return counts


def check_steady_state(engine: SegmentationEngine, frames: Sequence[np.ndarray], count: int) -> tuple[bool, str]:
    """Steady state (after a warm-up, one frame size): no synchronising call that torch's sync-debug mode sees
    (``torch.cuda.set_sync_debug_mode``; the pipeline's deliberate waits are event synchronisations, which it
    does not flag), no new cudaMalloc or cudaHostAlloc (which it does not see; a frame-size change makes them
    on purpose, once), and submit() returning at once while the GPU is busy. Calls outside torch (TensorRT's
    own) are not seen."""
    if engine.device != "cuda":
        return True, "not applicable on CPU"
    with Feeder(engine, keep_labels=False) as feeder:
        feeder.run(cycle(frames, 10))  # warm-up: first-time allocations may synchronise
        feeder.submit_seconds.clear()
        allocations_before = allocation_counts()
        with warnings.catch_warnings(record=True) as caught:  # process-wide: the pipeline's threads report here
            warnings.simplefilter("always")
            # where warnings are per thread context (Python 3.14 free-threaded), make a sync fail its frame
            torch.cuda.set_sync_debug_mode("error" if getattr(sys.flags, "context_aware_warnings", False) else "warn")
            try:
                feeder.run(cycle(frames, count))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        allocations = {name: value - allocations_before[name] for name, value in allocation_counts().items()}
        failed = sum(outcome.error is not None for outcome in feeder.outcomes)
    syncs = [str(warning.message) for warning in caught if "synchroniz" in str(warning.message).lower()]
    submit_ms = 1000.0 * np.asarray(feeder.submit_seconds or [0.0])
    median, worst = float(np.median(submit_ms)), float(submit_ms.max())
    problems = []
    if syncs:
        problems.append(f"{len(syncs)} synchronising CUDA calls in {count} frames, e.g. {syncs[0]!r}")
    problems += [f"{grown} new {name} in {count} frames" for name, grown in allocations.items() if grown > 0]
    if failed:
        first = next(o.error for o in feeder.outcomes if o.error is not None)
        problems.append(f"{failed} frames failed under the sync debug mode, the first: {first!r}")
    if median > SUBMIT_LIMIT_MS:
        problems.append(f"submit() took {median:.2f} ms (median) while the GPU was busy")
    return not problems, "; ".join(problems) or (
        f"{count} frames: no synchronising torch call, no new {' or '.join(allocations)}; "
        f"submit() median {median:.3f} ms, max {worst:.2f} ms")


def check_bgr_confidence(engine: SegmentationEngine, frames: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                         need: float, count: int) -> tuple[bool, str]:
    """The node's other path: BGR frames (``frames`` are RGB, reversed here), the confidence map on, maps at
    the engine's output size. The pipeline's labels and confidence equal ``infer``'s, in order; the labels
    agree with ``reference`` (the eager model's, at the same size) on at least ``need`` of the pixels; the
    confidence map has the labels' shape."""
    bgr = [np.ascontiguousarray(frame[..., ::-1]) for frame in frames]
    expected = [engine.infer(frame, color_order="bgr", confidence=True) for frame in bgr]
    with Feeder(engine, color_order="bgr") as feeder:
        feeder.run(cycle(bgr, count))
    problems = []
    shapes = {(None if r.confidence is None else r.confidence.shape, r.labels.shape) for r in expected}
    problems += [f"infer's confidence map is {confidence} for labels {labels}"
                 for confidence, labels in shapes if confidence != labels]
    order = [outcome.tag[1] for outcome in feeder.outcomes]
    if order != list(range(count)):
        problems.append(f"results came out as {order[:8]}...")
    for outcome in feeder.outcomes:
        want = expected[outcome.tag[2]]
        if outcome.error is not None:
            problems.append(f"frame {outcome.tag[1]} failed: {outcome.error!r}")
        elif not (np.array_equal(outcome.labels, want.labels) and np.array_equal(outcome.confidence, want.confidence)):
            problems.append(f"frame {outcome.tag[1]}: labels or confidence differ from infer's")
    shares = [float(np.mean(r.labels == ref)) if r.labels.shape == ref.shape else 0.0
              for r, ref in zip(expected, reference, strict=True)]
    if min(shares) < need:
        problems.append(f"labels of BGR frames agree with the eager model's on {100 * min(shares):.3f}% "
                        f"(need {100 * need:g}%)")
    height, width = expected[0].labels.shape
    return not problems, "; ".join(problems[:4]) or (
        f"{count} BGR frames through the pipeline with confidence: equal to infer, maps {height}x{width}, "
        f"{100 * min(shares):.3f}% equal to eager (worst frame)")
