"""``seg-replay``: segment every image of a rosbag2 recording and report speed and accuracy.

    seg-replay BAG --image-topic T [--label-topic L] [--weights W] [--backend B] [--out DIR] [--realtime]
    seg-replay RECORDING --image-topic T --label-topic L --prediction-topic /seg_node/<camera>/label

The frames go through the node's engine and FramePipeline (no ROS needed).
DIR receives report.json, report.md with PNG plots, and ``segmented/``: a
bag in the input's storage with the input images, the truth labels and the
node's outputs (``/seg_node/<camera>/label``, ``color_mask``, ``overlay``)
at the original stamps, for RViz 2 or Foxglove. Labels are matched to images
by header stamp; frames without a label are counted, never guessed. With
``--prediction-topic`` the predictions are those of a running node, recorded
with its inputs and the labels (``ros2 bag record`` on the car), and nothing
is run: the same report, for the system live.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..engine import EngineConfig, EngineError, FramePipeline, SegmentationEngine, SegResult, create_engine
from ..errors import SegNodeError
from ..imaging import ImageDecodeError, blend, colorize, palette_lut, to_rgb
from ..metrics import ConfusionMatrix, format_iou_table
from ..plots import plot_class_iou, save_image_grid
from ..recording.rosbag import (
    IMAGE_TYPES,
    BagError,
    BagReader,
    BagWriter,
    decode_image,
    decode_label,
    image_message,
    stamp_ns,
)
from ..weights import WeightsError, WeightsInfo, file_sha256, find_weights, read_info

OVERLAY_ALPHA = 0.5
STRIP_FRAMES = 4
# Labels and predictions wait this long (bag time) for their partner stamp before counting as unmatched.
MATCH_WINDOW_NS = 5_000_000_000
RESULT_TIMEOUT_S = 120.0


class LabelSizeError(SegNodeError, ValueError):
    """A truth label whose size differs from the image it belongs to."""


def score_frame(matrix: ConfusionMatrix, truth: np.ndarray, prediction: np.ndarray) -> None:
    """Add one frame to ``matrix``; the evaluation core shared by seg-replay and seg-eval."""
    if truth.shape != prediction.shape:
        raise LabelSizeError(
            f"label is {truth.shape[1]}x{truth.shape[0]} but the prediction is "
            f"{prediction.shape[1]}x{prediction.shape[0]}; labels must have the image's size"
        )
    matrix.update(truth, prediction)


def output_topics(image_topic: str) -> dict[str, str]:
    """The topics the node publishes for a camera on ``image_topic`` (see seg_node/ros/parameters.py)."""
    name = image_topic.removesuffix("/compressed").strip("/")
    return {kind: f"/seg_node/{name}/{kind}" for kind in ("label", "color_mask", "overlay")}


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    values = 1000 * np.asarray(seconds)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def simulate_drops(arrivals_s: list[float], service_s: list[float]) -> int:
    """Frames a newest-wins, one-slot pipeline drops when frames arrive at ``arrivals_s`` and take ``service_s``."""
    busy_until = float("-inf")
    waiting: int | None = None
    dropped = 0
    for index, arrival in enumerate(arrivals_s):
        if waiting is not None and busy_until <= arrival:
            busy_until += service_s[waiting]
            waiting = None
        if waiting is None and busy_until <= arrival:
            busy_until = arrival + service_s[index]
        else:
            dropped += waiting is not None
            waiting = index
    return dropped


@dataclass
class FrameTag:
    index: int
    stamp_ns: int
    log_time_ns: int


@dataclass
class ReplayState:
    """Everything counted while a bag is replayed."""

    info: WeightsInfo
    lut: np.ndarray
    strip_indices: set[int]
    matrix: ConfusionMatrix
    images_in_bag: int = 0
    frames_read: int = 0
    decode_failures: int = 0
    engine_failures: int = 0
    processed: int = 0
    pipeline_dropped: int = 0
    labels_read: int = 0
    label_failures: int = 0
    label_size_mismatches: int = 0
    scored: int = 0
    frames_without_label: int = 0
    labels_without_image: int = 0
    latencies_s: list[float] = field(default_factory=list)
    network_s: list[float] = field(default_factory=list)
    result_times_s: list[float] = field(default_factory=list)  # bag time of each processed frame
    arrivals_s: list[float] = field(default_factory=list)  # bag time of each submitted frame
    errors: list[str] = field(default_factory=list)
    image_stamps: set[int] = field(default_factory=set)
    labels: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # stamp -> (log time, truth)
    predictions: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # stamp -> (log time, labels)
    strip: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # stamp -> images of the strip

    def note(self, message: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(message)

    def add_label(self, stamp: int, log_time: int, truth: np.ndarray) -> None:
        self.labels_read += 1
        if stamp in self.predictions:
            self._score(stamp, truth, self.predictions.pop(stamp)[1])
        else:
            self.labels[stamp] = (log_time, truth)

    def add_prediction(self, stamp: int, log_time: int, prediction: np.ndarray) -> None:
        if stamp in self.labels:
            self._score(stamp, self.labels.pop(stamp)[1], prediction)
        else:
            self.predictions[stamp] = (log_time, prediction)

    def _score(self, stamp: int, truth: np.ndarray, prediction: np.ndarray) -> None:
        try:
            score_frame(self.matrix, truth, prediction)
            self.scored += 1
        except LabelSizeError as error:
            self.label_size_mismatches += 1
            self.note(f"frame stamped {stamp} ns not scored: {error}")
            return
        if stamp in self.strip:
            self.strip[stamp]["truth"] = colorize(truth, self.lut)

    def expire(self, now_log_time: int | None) -> None:
        """Count labels and predictions whose partner did not come within the window (all when ``None``)."""
        for pending in (self.labels, self.predictions):
            expired = [s for s, (t, _) in pending.items() if now_log_time is None or now_log_time - t > MATCH_WINDOW_NS]
            for stamp in expired:
                del pending[stamp]
                if pending is self.labels:
                    # a label of a frame that was dropped or failed is not a label without an image
                    self.labels_without_image += stamp not in self.image_stamps
                else:
                    self.frames_without_label += 1


class Replayer:
    """Feeds a bag's images through a FramePipeline, in real time or as fast as the engine goes."""

    def __init__(
        self,
        engine: SegmentationEngine,
        realtime: bool,
        writer: BagWriter | None,
        topics: dict[str, str],
        state: ReplayState,
    ) -> None:
        self.engine = engine
        self.realtime = realtime
        self.writer = writer
        self.topics = topics
        self.state = state
        self.pipeline = FramePipeline(engine)
        self.in_flight: dict[int, tuple[FrameTag, np.ndarray, str]] = {}
        self.first_log_time: int | None = None
        self.start_wall = time.perf_counter()

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


class RecordedOutputs:
    """The node's predictions recorded beside its inputs (``ros2 bag record`` on the car), matched by stamp.

    Latency is the recorder's receive time of the prediction minus that of its image; an image whose
    prediction never came was dropped (or lost) on the way.
    """

    def __init__(self, state: ReplayState) -> None:
        self.state = state
        self.images: dict[int, tuple[FrameTag, np.ndarray | None, str]] = {}
        self.early: dict[int, tuple[int, np.ndarray]] = {}  # predictions recorded before their image
        self.first_log_time: int | None = None
        self.unanswered = 0

    def submit(self, tag: FrameTag, frame: np.ndarray, color_order: str) -> None:
        if self.first_log_time is None:
            self.first_log_time = tag.log_time_ns
        self.state.arrivals_s.append((tag.log_time_ns - self.first_log_time) / 1e9)
        keep = frame if tag.index in self.state.strip_indices else None  # pixels only for the strip
        self.images[tag.stamp_ns] = (tag, keep, color_order)
        if tag.stamp_ns in self.early:
            self.add(tag.stamp_ns, *self.early.pop(tag.stamp_ns))
        for stamp in [s for s, (t, _, _) in self.images.items() if tag.log_time_ns - t.log_time_ns > MATCH_WINDOW_NS]:
            del self.images[stamp]
            self.unanswered += 1

    def add(self, stamp: int, log_time: int, labels: np.ndarray) -> None:
        if stamp not in self.images:
            self.early[stamp] = (log_time, labels)
            return
        tag, frame, color_order = self.images.pop(stamp)
        state = self.state
        state.processed += 1
        state.latencies_s.append((log_time - tag.log_time_ns) / 1e9)
        state.result_times_s.append((tag.log_time_ns - (self.first_log_time or 0)) / 1e9)
        if frame is not None:
            overlay = blend(to_rgb(frame, color_order), colorize(labels, state.lut), OVERLAY_ALPHA)
            state.strip[stamp] = {"input": to_rgb(frame, color_order).copy(), "overlay": overlay}
        state.add_prediction(stamp, tag.log_time_ns, labels)

    def close(self) -> None:
        self.state.pipeline_dropped = self.unanswered + len(self.images)
        for stamp in self.early:
            self.state.note(f"prediction stamped {stamp} ns has no image in the recording")


def replay(
    bag: str | Path,
    image_topic: str,
    engine: SegmentationEngine | None,
    out: str | Path,
    *,
    label_topic: str | None = None,
    prediction_topic: str | None = None,
    info: WeightsInfo | None = None,
    realtime: bool = False,
    write_bag: bool = True,
    progress: bool = True,
    weights: str | Path | None = None,
) -> dict[str, Any]:
    """Replay ``bag`` through ``engine``, write report.json, report.md, plots and ``segmented/`` to ``out``.

    With ``prediction_topic`` (and ``engine`` None, ``info`` naming the classes) the predictions are the
    node's, recorded in the bag, and nothing is run. Raises BagError when the bag or its topics cannot be
    read at all; a bag that breaks off half-way gives a report of what was read, with ``read_error`` set.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (engine is None) != (prediction_topic is not None) or (engine is None and info is None):
        raise ValueError("give an engine, or a prediction topic and the weights' info")
    info = engine.info if engine is not None else info
    with BagReader(bag) as reader:
        image_type = reader.require_topic(image_topic, IMAGE_TYPES)
        topics = [image_topic]
        for extra in (label_topic, prediction_topic):
            if extra:
                reader.require_topic(extra, IMAGE_TYPES)
                topics.append(extra)
        images_in_bag = reader.counts.get(image_topic, 0)
        state = ReplayState(
            info=info,
            lut=palette_lut(info.palette),
            strip_indices={int(i) for i in np.linspace(0, max(images_in_bag - 1, 0), STRIP_FRAMES)},
            matrix=ConfusionMatrix(info.num_classes, info.ignore_index),
            images_in_bag=images_in_bag,
        )
        writer = None
        write_bag = write_bag and engine is not None  # a recording of the node holds its outputs already
        if write_bag:
            shutil.rmtree(out / "segmented", ignore_errors=True)
            writer = BagWriter(out / "segmented", reader.storage)
        replayer: Replayer | RecordedOutputs
        if engine is None:
            replayer = RecordedOutputs(state)
        else:
            replayer = Replayer(engine, realtime, writer, output_topics(image_topic), state)
        started = time.perf_counter()
        bar = tqdm(total=images_in_bag, desc="seg-replay", unit="frame", disable=not progress)
        try:
            for message in reader.messages(topics):
                stamp = stamp_ns(message.message)
                if writer is not None:
                    writer.write_raw(message.topic, message.msgtype, message.raw, message.log_time_ns)
                state.expire(message.log_time_ns)
                if message.topic in (label_topic, prediction_topic):
                    try:
                        labels = decode_label(message.message, message.msgtype)
                    except (ImageDecodeError, BagError) as error:
                        state.label_failures += message.topic == label_topic
                        state.note(f"{message.topic} stamped {stamp} ns unreadable: {error}")
                        continue
                    if message.topic == label_topic:
                        state.add_label(stamp, message.log_time_ns, labels)
                    else:
                        replayer.add(stamp, message.log_time_ns, labels)
                    continue
                tag = FrameTag(state.frames_read, stamp, message.log_time_ns)
                state.frames_read += 1
                state.image_stamps.add(stamp)
                bar.update()
                try:
                    frame, color_order = decode_image(message.message, message.msgtype)
                except ImageDecodeError as error:
                    state.decode_failures += 1
                    state.note(f"image stamped {stamp} ns unreadable: {error}")
                    continue
                replayer.submit(tag, frame, color_order)
            replayer.close()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        wall_s = time.perf_counter() - started
        state.expire(None)
        report = build_report(
            state,
            engine,
            wall_s,
            realtime=realtime,
            bag=Path(bag),
            storage=reader.storage,
            image_topic=image_topic,
            image_type=image_type,
            label_topic=label_topic,
            prediction_topic=prediction_topic,
            weights=weights,
            read_error=reader.read_error,
            warnings=reader.warnings,
            damaged=reader.damaged_messages,
        )
    report["outputs"] = write_report(report, state, out, has_bag=write_bag)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_report(
    state: ReplayState,
    engine: SegmentationEngine | None,
    wall_s: float,
    *,
    realtime: bool,
    bag: Path,
    storage: str,
    image_topic: str,
    image_type: str,
    label_topic: str | None,
    prediction_topic: str | None,
    weights: str | Path | None,
    read_error: str | None,
    warnings: list[str],
    damaged: int,
) -> dict[str, Any]:
    arrivals = state.arrivals_s
    span = arrivals[-1] - arrivals[0] if arrivals else 0.0
    recorded_fps = (len(arrivals) - 1) / span if span > 0 else None
    if engine is None:
        dropped, source = state.pipeline_dropped, "measured: recorded images without a recorded prediction"
    elif realtime:
        dropped, source = state.pipeline_dropped, "measured (--realtime)"
    else:
        # Every frame was processed; what a live replay would drop follows from the measured per-frame times.
        dropped = simulate_drops(arrivals, state.latencies_s) if len(state.latencies_s) == len(arrivals) else None
        source = "simulated from the measured latencies at the recorded rate"
    accuracy = None
    if label_topic:
        accuracy = state.matrix.report([c.name for c in state.info.classes]) if state.scored else None
    network_mean = float(np.mean(state.network_s)) if state.network_s else None
    return {
        "bag": str(bag),
        "storage": storage,
        "image_topic": image_topic,
        "image_type": image_type,
        "label_topic": label_topic,
        "prediction_topic": prediction_topic,
        "mode": "recorded predictions" if engine is None else "realtime" if realtime else "as fast as possible",
        "model": state.info.describe(),
        "weights": None if weights is None else str(weights),
        "weights_sha256": file_sha256(weights) if weights is not None and Path(weights).is_file() else None,
        "backend": engine.backend_name if engine else "the recorded node",
        "device": str(engine.device) if engine else None,
        "precision": engine.precision if engine else None,
        "network_size": list(engine.network_size) if engine else None,
        "frames": {
            "in_bag": state.images_in_bag,
            "read": state.frames_read,
            "processed": state.processed,
            "unreadable": state.decode_failures,
            "damaged_messages": damaged,
            "engine_failures": state.engine_failures,
            "dropped_realtime": dropped,
            "dropped_realtime_source": source,
            "labelled": state.scored,
            "without_label": state.frames_without_label if label_topic else state.processed,
            "labels_read": state.labels_read,
            "labels_unreadable": state.label_failures,
            "labels_wrong_size": state.label_size_mismatches,
            "labels_without_image": state.labels_without_image,
        },
        "fps": {
            "engine": 1.0 / network_mean if network_mean else None,
            "end_to_end": state.processed / wall_s if wall_s > 0 and state.processed else None,
            "recorded": recorded_fps,
        },
        "latency_ms": percentiles_ms(state.latencies_s),
        "network_ms": percentiles_ms(state.network_s),
        "wall_s": wall_s,
        "accuracy": accuracy,
        "read_error": read_error,
        "warnings": warnings[:20],
        "errors": state.errors,
    }


def plot_latency(times_s: list[float], latencies_s: list[float], title: str, path: Path) -> Path:
    """Latency of each frame over bag time, beside its histogram."""
    import matplotlib.pyplot as plt  # plots.py has chosen the Agg backend

    values = 1000 * np.asarray(latencies_s)
    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    over_time.plot(times_s, values, ".-", markersize=3, linewidth=0.8)
    over_time.set_xlabel("bag time (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title(title)
    histogram.hist(values, bins=min(30, max(5, len(values) // 3)), orientation="horizontal", color="tab:blue")
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        histogram.axhline(np.percentile(values, q), linestyle="--", linewidth=0.8, color="red")
        histogram.text(histogram.get_xlim()[1], np.percentile(values, q), name, ha="right", va="bottom", fontsize=7)
    histogram.set_xlabel("frames")
    histogram.sharey(over_time)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_report(report: dict[str, Any], state: ReplayState, out: Path, *, has_bag: bool) -> dict[str, str]:
    """report.md and its PNG plots; returns the files written (report.json is written by the caller)."""
    outputs = {"report_json": "report.json", "report_md": "report.md"}
    if has_bag:
        outputs["segmented_bag"] = "segmented"
    if state.latencies_s:
        plot_latency(
            state.result_times_s, state.latencies_s, f"{report['model']} on {report['backend']}", out / "latency.png"
        )
        outputs["latency_plot"] = "latency.png"
    accuracy = report["accuracy"]
    if accuracy is not None:
        plot_class_iou(
            accuracy["per_class_iou"],
            state.info.palette,
            f"per-class IoU, {accuracy['images']} frames",
            out / "class_iou.png",
        )
        outputs["class_iou_plot"] = "class_iou.png"
    if state.strip:
        with_truth = all("truth" in s for s in state.strip.values())
        titles = ["input", "truth", "prediction overlay"] if with_truth else ["input", "prediction overlay"]
        keys = ["input", "truth", "overlay"] if with_truth else ["input", "overlay"]
        rows = [[sample[k] for k in keys] for _, sample in sorted(state.strip.items())]
        save_image_grid(rows, titles, out / "overlays.png")
        outputs["overlay_strip"] = "overlays.png"
    (out / "report.md").write_text(render_markdown(report, outputs))
    return outputs


def render_markdown(report: dict[str, Any], outputs: dict[str, str]) -> str:
    frames, fps, latency, network = report["frames"], report["fps"], report["latency_ms"], report["network_ms"]
    if report["network_size"] is None:
        runner = f"predictions recorded from the node on `{report['prediction_topic']}`"
    else:
        height, width = report["network_size"]
        runner = (
            f"{report['model']} on **{report['backend']}** ({report['device']}, {report['precision']}), "
            f"network input {height}x{width}, replayed {report['mode']}"
        )
    lines = [
        f"# Replay of `{report['bag']}`",
        "",
        f"{runner}; images from `{report['image_topic']}` ({report['image_type']}).",
        "",
    ]
    if report["read_error"]:
        lines += [f"**The bag broke off:** {report['read_error']}. The figures cover what was read.", ""]
    elif report["warnings"]:
        lines += ["**The bag is damaged**; the figures cover what could be read (see Problems).", ""]
    lines += [
        "## Speed",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| frames in bag / read / processed | {frames['in_bag']} / {frames['read']} / {frames['processed']} |",
        f"| engine fps (1 / mean network time) | {_fmt(fps['engine'])} |",
        f"| end-to-end fps (decode, engine, outputs) | {_fmt(fps['end_to_end'])} |",
        f"| recorded rate (fps) | {_fmt(fps['recorded'])} |",
        f"| latency p50 / p95 / p99 (ms) | {_fmt(latency['p50'])} / {_fmt(latency['p95'])} / {_fmt(latency['p99'])} |",
        f"| network time p50 (ms) | {_fmt(network['p50'])} |",
        f"| frames dropped in real time | {frames['dropped_realtime']} ({frames['dropped_realtime_source']}) |",
        f"| unreadable / failed frames | {frames['unreadable']} / {frames['engine_failures']} |",
        "",
    ]
    if "latency_plot" in outputs:
        lines += ["![latency](latency.png)", ""]
    accuracy = report["accuracy"]
    if report["label_topic"]:
        lines += [
            "## Accuracy",
            "",
            f"Labels from `{report['label_topic']}`, matched by header stamp: {frames['labelled']} frames "
            f"scored, "
            f"{frames['without_label']} without a label, {frames['labels_without_image']} labels without an "
            f"image, {frames['labels_wrong_size']} of the wrong size.",
            "",
        ]
        if accuracy is None:
            lines += ["No frame could be scored.", ""]
        else:
            lines += ["| class | IoU % |", "| --- | --- |"]
            lines += [
                f"| {name} | {'-' if v is None else f'{100 * v:.1f}'} |"
                for name, v in accuracy["per_class_iou"].items()
            ]
            lines += [
                f"| **mIoU** | **{100 * accuracy['miou']:.2f}** |",
                f"| pixel accuracy | {100 * accuracy['pixel_acc']:.2f} |",
                "",
                "![per-class IoU](class_iou.png)",
                "",
            ]
    if "overlay_strip" in outputs:
        lines += ["## Frames", "", "![input, truth, prediction](overlays.png)", ""]
    if "segmented_bag" in outputs:
        lines += [
            "`segmented/` holds the input images, the labels and the outputs "
            f"{', '.join(f'`{t}`' for t in output_topics(report['image_topic']).values())} at the original "
            "stamps: open it in Foxglove, or `ros2 bag play segmented` with RViz 2.",
            "",
        ]
    problems = report["errors"] + report["warnings"]
    if problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def print_summary(report: dict[str, Any]) -> None:
    frames, fps, latency = report["frames"], report["fps"], report["latency_ms"]
    print(
        f"{report['model']} on {report['backend']}: {frames['processed']}/{frames['read']} frames, "
        f"engine {_fmt(fps['engine'])} fps, end to end {_fmt(fps['end_to_end'])} fps, latency p50/p95/p99 "
        f"{_fmt(latency['p50'])}/{_fmt(latency['p95'])}/{_fmt(latency['p99'])} ms, "
        f"dropped in real time: {frames['dropped_realtime']}"
    )
    if report["accuracy"] is not None:
        print(format_iou_table(report["accuracy"]))
    for problem in ([report["read_error"]] if report["read_error"] else []) + report["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    for problem in report["errors"][:5]:
        print(f"problem: {problem}", file=sys.stderr)
    if len(report["errors"]) > 5:
        print(f"... {len(report['errors']) - 5} more problems in report.md", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--label-topic", help="truth labels (mono8 Image or PNG CompressedImage), same stamps")
    parser.add_argument("--weights", default="", help="weights .safetensors or a shipped name; default cgnet_camvid")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch2trt", "torch", "onnxruntime"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "int8"))
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--network-size", type=int, nargs=2, metavar=("H", "W"), help="default: the training size")
    parser.add_argument("--threads", type=int, help="CPU threads of the backend")
    parser.add_argument("--out", type=Path, default=Path("out/replay"), help="output folder")
    parser.add_argument("--realtime", action="store_true", help="replay at the recorded rate (drops as on the car)")
    parser.add_argument("--no-bag", action="store_true", help="skip writing the segmented bag")
    parser.add_argument(
        "--prediction-topic",
        help="score the node's recorded label topic instead of running the engine (--weights names the classes)",
    )
    args = parser.parse_args(argv)
    engine = info = None
    try:
        weights = find_weights(args.weights)
        if args.prediction_topic:
            info = read_info(weights)
        else:
            config = EngineConfig(
                backend=args.backend,
                precision=args.precision,
                device=args.device,
                network_size=tuple(args.network_size) if args.network_size else None,
                threads=args.threads,
            )
            engine = create_engine(weights, config)
    except (WeightsError, EngineError, OSError) as error:
        print(f"seg-replay: {error}", file=sys.stderr)
        return 2
    try:
        report = replay(
            args.bag,
            args.image_topic,
            engine,
            args.out,
            label_topic=args.label_topic,
            prediction_topic=args.prediction_topic,
            info=info,
            realtime=args.realtime,
            write_bag=not args.no_bag,
            weights=weights,
        )
    except BagError as error:
        print(f"seg-replay: {error}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    print_summary(report)
    print(f"wrote {args.out}/report.json, report.md" + (", segmented/" if "segmented_bag" in report["outputs"] else ""))
    return 1 if report["read_error"] or report["warnings"] else 0  # a damaged bag, reported as far as it was read


if __name__ == "__main__":
    sys.exit(main())
