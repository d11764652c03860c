"""Where a replay's predictions come from: the engine run over the bag, or the node's recorded label topic.

Both implement ``PredictionSource``: the replay reads the bag once, in log-time
order, hands every decoded image to ``submit`` and every message of
``prediction_topic`` (when the source has one) to ``add_recorded``, and calls
``close`` at the end. A source puts each prediction, with its latency, into
the shared ``ReplayState``, which matches it with its label by stamp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..engine import EngineError, FramePipeline, SegmentationEngine, SegResult
from ..imaging import blend, colorize, to_rgb
from ..recording.rosbag import BagWriter, image_message
from .matching import MATCH_WINDOW_NS, FrameTag, ReplayState

OVERLAY_ALPHA = 0.5
RESULT_TIMEOUT_S = 120.0
OUTPUT_KINDS = ("label", "color_mask", "overlay")


def output_topics(image_topic: str) -> dict[str, str]:
    """The topics the node publishes for a camera on ``image_topic`` (see seg_node/ros/parameters.py)."""
    name = image_topic.removesuffix("/compressed").strip("/")
    return {kind: f"/seg_node/{name}/{kind}" for kind in OUTPUT_KINDS}


@dataclass(frozen=True)
class RunnerInfo:
    """What produced the predictions, for the report; engine fields are None for recorded predictions."""

    backend: str
    device: str | None = None
    precision: str | None = None
    network_size: tuple[int, int] | None = None


class PredictionSource(Protocol):
    """The interface the replay loop drives; see the module docstring."""

    prediction_topic: str | None  # the bag topic whose messages go to add_recorded; None: the source predicts

    @property
    def runner(self) -> RunnerInfo:
        """What produced the predictions."""
        ...

    def submit(self, tag: FrameTag, frame: np.ndarray, color_order: str) -> None:
        """An image of the bag, decoded, in log-time order."""
        ...

    def add_recorded(self, stamp: int, log_time_ns: int, labels: np.ndarray) -> None:
        """A message of ``prediction_topic``, decoded."""
        ...

    def close(self) -> None:
        """Wait for what is in flight and set ``state.pipeline_dropped``."""
        ...


class EngineSource:
    """Feeds a bag's images through a FramePipeline, in real time or as fast as the engine goes.

    With a ``writer`` the node's outputs (label, colour mask, overlay) go into it at the input's stamps.
    """

    prediction_topic = None

    def __init__(self, engine: SegmentationEngine, realtime: bool, writer: BagWriter | None, topics: dict[str, str],
                 state: ReplayState) -> None:
        self.engine = engine
        self.realtime = realtime
        self.writer = writer
        self.topics = topics
        self.state = state
        self.pipeline = FramePipeline(engine)
        self.in_flight: dict[int, tuple[FrameTag, np.ndarray, str]] = {}
        self.first_log_time: int | None = None
        self.start_wall = time.perf_counter()

    @property
    def runner(self) -> RunnerInfo:
        engine = self.engine
        return RunnerInfo(engine.backend_name, str(engine.device), engine.precision, tuple(engine.network_size))

    def submit(self, tag: FrameTag, frame: np.ndarray, color_order: str) -> None:
        if self.first_log_time is None:
            self.first_log_time, self.start_wall = tag.log_time_ns, time.perf_counter()
        if self.realtime:
            due = self.start_wall + (tag.log_time_ns - self.first_log_time) / 1e9
            while (remaining := due - time.perf_counter()) > 0:
                self._handle(self.pipeline.get(timeout=remaining))
        else:
            # One frame in flight: the next one is read and decoded while the engine works on this one.
            self.drain()
        self.in_flight[tag.index] = (tag, frame, color_order)
        self.state.arrivals_s.append((tag.log_time_ns - self.first_log_time) / 1e9)
        self.pipeline.submit(frame, tag=tag, color_order=color_order)

    def add_recorded(self, stamp: int, log_time_ns: int, labels: np.ndarray) -> None:
        raise TypeError("the engine source predicts itself; it takes no recorded predictions")

    def drain(self) -> None:
        """Wait for every submitted frame to come out (processed, failed or dropped)."""
        deadline = time.perf_counter() + RESULT_TIMEOUT_S
        while self.in_flight:
            stats = self.pipeline.stats()
            if stats.processed + stats.dropped + stats.errors >= stats.submitted:
                break
            if time.perf_counter() > deadline:
                raise EngineError(f"no result from the engine within {RESULT_TIMEOUT_S:.0f} s")
            self._handle(self.pipeline.get(timeout=0.5))
        while (result := self.pipeline.get(timeout=0)) is not None:
            self._handle(result)
        self.in_flight.clear()

    def close(self) -> None:
        self.drain()
        self.state.pipeline_dropped = self.pipeline.stats().dropped
        self.pipeline.close()

    def _handle(self, result: SegResult | None) -> None:
        if result is None:
            return
        tag: FrameTag = result.tag
        for index in [i for i in self.in_flight if i < tag.index]:  # newer frame came out: these were dropped
            del self.in_flight[index]
        _, frame, color_order = self.in_flight.pop(tag.index)
        state = self.state
        if result.error is not None or result.labels is None:
            state.engine_failures += 1
            state.note(f"frame stamped {tag.stamp_ns} ns failed in the engine: {result.error}")
            return
        state.processed += 1
        state.latencies_s.append(result.timings["total"])
        state.network_s.append(result.timings["network"])
        state.result_times_s.append((tag.log_time_ns - (self.first_log_time or 0)) / 1e9)
        mask = colorize(result.labels, state.lut)
        overlay = None
        if self.writer is not None or tag.index in state.strip_indices:
            overlay = blend(to_rgb(frame, color_order), mask, OVERLAY_ALPHA)
        if self.writer is not None:
            frame_id = "camera"
            for kind, image, encoding in (
                ("label", result.labels, "mono8"),
                ("color_mask", mask, "rgb8"),
                ("overlay", overlay, "rgb8"),
            ):
                self.writer.write(
                    self.topics[kind], image_message(image, encoding, tag.stamp_ns, frame_id), tag.log_time_ns
                )
        if tag.index in state.strip_indices:
            state.strip[tag.stamp_ns] = {"input": to_rgb(frame, color_order).copy(), "overlay": overlay}
        state.add_prediction(tag.stamp_ns, tag.log_time_ns, result.labels)


class RecordedSource:
    """The node's predictions recorded beside its inputs (``ros2 bag record`` on the car), matched by stamp.

    Latency is the recorder's receive time of the prediction minus that of its image; an image whose
    prediction never came was dropped (or lost) on the way.
    """

    def __init__(self, prediction_topic: str, state: ReplayState) -> None:
        self.prediction_topic = prediction_topic
        self.state = state
        self.images: dict[int, tuple[FrameTag, np.ndarray | None, str]] = {}
        self.early: dict[int, tuple[int, np.ndarray]] = {}  # predictions recorded before their image
        self.first_log_time: int | None = None
        self.unanswered = 0

    @property
    def runner(self) -> RunnerInfo:
        return RunnerInfo("the recorded node")

    def submit(self, tag: FrameTag, frame: np.ndarray, color_order: str) -> None:
        if self.first_log_time is None:
            self.first_log_time = tag.log_time_ns
        self.state.arrivals_s.append((tag.log_time_ns - self.first_log_time) / 1e9)
        keep = frame if tag.index in self.state.strip_indices else None  # pixels only for the strip
        self.images[tag.stamp_ns] = (tag, keep, color_order)
        if tag.stamp_ns in self.early:
            self.add_recorded(tag.stamp_ns, *self.early.pop(tag.stamp_ns))
        for stamp in [s for s, (t, _, _) in self.images.items() if tag.log_time_ns - t.log_time_ns > MATCH_WINDOW_NS]:
            del self.images[stamp]
            self.unanswered += 1

    def add_recorded(self, stamp: int, log_time_ns: int, labels: np.ndarray) -> None:
        if stamp not in self.images:
            self.early[stamp] = (log_time_ns, labels)
            return
        tag, frame, color_order = self.images.pop(stamp)
        state = self.state
        state.processed += 1
        state.latencies_s.append((log_time_ns - tag.log_time_ns) / 1e9)
        state.result_times_s.append((tag.log_time_ns - (self.first_log_time or 0)) / 1e9)
        if frame is not None:
            overlay = blend(to_rgb(frame, color_order), colorize(labels, state.lut), OVERLAY_ALPHA)
            state.strip[stamp] = {"input": to_rgb(frame, color_order).copy(), "overlay": overlay}
        state.add_prediction(stamp, tag.log_time_ns, labels)

    def close(self) -> None:
        self.state.pipeline_dropped = self.unanswered + len(self.images)
        for stamp in self.early:
            self.state.note(f"prediction stamped {stamp} ns has no image in the recording")
