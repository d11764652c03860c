"""FramePipeline: real-time, overlapped inference on a stream of frames.

Made by ``SegmentationEngine.pipeline()`` (or ``FramePipeline(engine)``). Three threads share two
input slots and two output slots, and run the engine's stages:

    prepare  (validate, upload, pre-process frame n+1)
    execute  (network + argmax on frame n)
    collect  (copy back the uint8 maps of frame n-1, deliver the result)

so on CUDA the copies of neighbouring frames overlap the network, and on CPU
the pre-processing of the next frame runs while the network runs. The newest
frame wins: each stream keeps at most one frame waiting, and a newer one
replaces it (counted as dropped). Frames are taken in submission order, so a
stream's results come out in its input order; streams take turns.

The pipeline never touches the backend itself: the engine's ``execute`` runs
one network at a time, so ``engine.infer`` may run while a pipeline does,
and closing the engine closes its pipelines first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EngineError
from .result import SegResult

if TYPE_CHECKING:
    from .engine import SegmentationEngine

log = logging.getLogger(__name__)

SLOTS = 2  # double buffering


@dataclass
class PipelineStats:
    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    errors: int = 0
    waiting: int = 0  # frames submitted but not yet taken by the pipeline (at most one per stream)


@dataclass
class _Job:
    frame: Any
    tag: Any
    stream: str
    color_order: str
    submitted: float
    confidence: bool  # compute this frame's confidence map (resolved by the engine at submit)
    input_slot: Any = None
    output_slot: Any = None
    error: Exception | None = None
    timings: dict[str, float] = field(default_factory=dict)


class FramePipeline:
    """Feed frames with ``submit`` (never blocks); results arrive by ``on_result`` or ``get``.

    The pipeline keeps a reference to each submitted frame until it is
    pre-processed: do not write into a frame's buffer after submitting it.
    """

    def __init__(self, engine: SegmentationEngine, on_result: Callable[[SegResult], None] | None = None) -> None:
        self._engine = engine
        self._on_result = on_result
        self._results: queue.Queue[SegResult] = queue.Queue()
        self._waiting: OrderedDict[str, _Job] = OrderedDict()  # per stream, its newest frame not yet taken
        self._lock = threading.Lock()  # guards the waiting frames and the counts together
        self._waiting_changed = threading.Condition(self._lock)
        self._stats: dict[str, PipelineStats] = defaultdict(PipelineStats)
        self._closed = threading.Event()
        self._free_inputs: queue.Queue[Any] = queue.Queue()
        self._free_outputs: queue.Queue[Any] = queue.Queue()
        for _ in range(SLOTS):
            input_slot, output_slot = engine.new_slots()
            self._free_inputs.put(input_slot)
            self._free_outputs.put(output_slot)
        engine.register(self)
        self._prepared: queue.Queue[_Job | None] = queue.Queue()
        self._executed: queue.Queue[_Job | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=loop, name=f"seg-{loop.__name__.strip('_')}", daemon=True)
            for loop in (self._prepare_loop, self._execute_loop, self._collect_loop)
        ]
        for thread in self._threads:
            thread.start()

    # ---- caller side

    def submit(self, frame: np.ndarray, tag: Any = None, stream: str = "default", color_order: str = "rgb",
               confidence: bool | None = None) -> None:
        """Queue ``frame`` for ``stream``, replacing (dropping) that stream's frame still waiting, if any.

        ``confidence``: compute this frame's confidence map; None: as the engine is configured. True on an
        engine built without confidence raises EngineConfigError here (SegmentationEngine.wants_confidence).
        """
        if self._closed.is_set():
            raise EngineError("submit() on a closed FramePipeline")
        job = _Job(frame, tag, stream, color_order, time.perf_counter(), self._engine.wants_confidence(confidence))
        with self._waiting_changed:
            stats = self._stats[stream]
            stats.submitted += 1
            stats.dropped += stream in self._waiting
            self._waiting[stream] = job  # a replaced stream keeps its turn
            self._waiting_changed.notify()

    def get(self, timeout: float | None = None) -> SegResult | None:
        """The next result, or None after ``timeout`` seconds; only without an on_result callback."""
        if self._on_result is not None:
            raise EngineError("results go to the on_result callback; get() is for pipelines without one")
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def stats(self, stream: str | None = None) -> PipelineStats:
        """Counts for ``stream``, or summed over every stream."""
        with self._lock:
            if stream is not None:
                return replace(self._stats.get(stream, PipelineStats()), waiting=int(stream in self._waiting))
            total = PipelineStats(waiting=len(self._waiting))
            for stats in self._stats.values():
                for name in ("submitted", "processed", "dropped", "errors"):
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
            return total

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the threads (frames in flight are discarded) and release the slots, within ``timeout``;
        whether every thread has stopped (False: one is still in a network run, which goes on using the
        engine's backend: whoever frees the engine then waits for it, or leaves it to the process's end).

        Safe from any thread, twice, and whatever the threads' state: a pipeline whose construction was
        interrupted (Ctrl-C while the node configures) is registered with its engine before all of its
        threads have started, and the engine's close then closes it.
        """
        with self._waiting_changed:  # the check and the set together: two closers race (node and engine)
            if self._closed.is_set():
                return not any(thread.is_alive() for thread in self._threads)
            self._closed.set()
            self._waiting.clear()
            self._waiting_changed.notify_all()
        for wake_up in (self._free_inputs, self._prepared, self._free_outputs, self._executed):
            wake_up.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None and thread is not threading.current_thread():  # started; not ourselves
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:  # the queues keep their wake-ups: the busy thread ends once its run does
            log.warning("FramePipeline.close: %s still busy after %.1f s (a network run in progress)", stuck, timeout)
            return False
        self._engine.synchronize()  # copies and kernels of discarded frames may still use the slots
        for slots in (self._free_inputs, self._free_outputs, self._prepared, self._executed):
            while not slots.empty():
                slots.get_nowait()
        return True

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- the three stages

    def _next_waiting(self) -> _Job | None:
        with self._waiting_changed:
            while not self._waiting and not self._closed.is_set():
                self._waiting_changed.wait()
            if self._closed.is_set():
                return None
            return self._waiting.popitem(last=False)[1]  # the stream whose turn it is

    def _prepare_loop(self) -> None:
        while True:
            slot = self._free_inputs.get()  # a free slot first, so the frame taken next is the newest
            if slot is None or self._closed.is_set():
                return
            job = self._next_waiting()
            if job is None:
                return
            start = time.perf_counter()
            job.timings["queued"] = start - job.submitted
            try:
                self._engine.prepare(slot, job.frame, job.color_order)
                job.input_slot = slot
            except Exception as error:  # reported with this frame; the next frame goes on
                job.error = error
                self._free_inputs.put(slot)
            job.frame = None
            job.timings["prepare"] = time.perf_counter() - start
            self._prepared.put(job)

    def _execute_loop(self) -> None:
        while True:
            job = self._prepared.get()
            if job is None or self._closed.is_set():
                return
            if job.error is None:
                slot = self._free_outputs.get()
                if slot is None:
                    return
                start = time.perf_counter()
                try:
                    self._engine.execute(job.input_slot, slot, job.confidence)
                    job.output_slot = slot
                except Exception as error:
                    job.error = error
                    self._free_outputs.put(slot)
                job.timings["network"] = time.perf_counter() - start
                self._free_inputs.put(job.input_slot)
                job.input_slot = None
            self._executed.put(job)

    def _collect_loop(self) -> None:
        while True:
            job = self._executed.get()
            if job is None or self._closed.is_set():
                return
            labels = confidence = None
            if job.error is None:
                start = time.perf_counter()
                try:
                    maps = self._engine.collect(job.output_slot)
                    labels, confidence = maps.labels, maps.confidence
                    if maps.network_seconds is not None:
                        job.timings["network"] = maps.network_seconds
                except Exception as error:
                    job.error = error
                self._free_outputs.put(job.output_slot)
                job.output_slot = None
                job.timings["collect"] = time.perf_counter() - start
            job.timings["total"] = time.perf_counter() - job.submitted
            self._deliver(SegResult(labels, confidence, job.tag, job.stream, job.timings, job.error))

    def _deliver(self, result: SegResult) -> None:
        with self._lock:
            stats = self._stats[result.stream]
            if result.error is None:
                stats.processed += 1
            else:
                stats.errors += 1
        if self._on_result is None:
            self._results.put(result)
            return
        try:
            self._on_result(result)
        except Exception:  # the caller's bug must not stop the pipeline
            log.exception("on_result callback raised for a frame of stream %r", result.stream)
