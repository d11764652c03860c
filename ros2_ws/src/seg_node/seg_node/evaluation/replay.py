"""Replay a rosbag2 recording: segment every image and report speed and accuracy (``seg-replay``).

The frames go through the node's engine and FramePipeline (no ROS needed).
``out`` receives report.json, report.md with PNG plots, and ``segmented/``: a
bag in the input's storage with the input images, the truth labels and the
node's outputs (``/seg_node/<camera>/label``, ``color_mask``, ``overlay``)
at the original stamps, for RViz 2 or Foxglove. Labels are matched to images
by header stamp (``matching``); frames without a label are counted, never
guessed. With a prediction topic the predictions are those of a running
node, recorded with its inputs and the labels (``ros2 bag record`` on the
car), and nothing is run: the same report, for the system live
(``sources``). The report itself is built in ``report``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import SegmentationEngine
from ..imaging import ImageDecodeError, palette_lut
from ..metrics import ConfusionMatrix
from ..progress import progress_bar
from ..recording.rosbag import IMAGE_TYPES, BagError, BagReader, BagWriter, decode_image, decode_label, stamp_ns
from ..weights import WeightsInfo
from .matching import FrameTag, ReplayState
from .report import ReplayRun, build_report, write_report
from .sources import EngineSource, PredictionSource, RecordedSource, output_topics

STRIP_FRAMES = 4


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
        image_type = require_topics(reader, image_topic, label_topic, prediction_topic)
        topics = [t for t in (image_topic, label_topic, prediction_topic) if t]
        state = _new_state(info, reader.counts.get(image_topic, 0))
        write_bag = write_bag and engine is not None  # a recording of the node holds its outputs already
        writer = _open_writer(out, reader.storage) if write_bag else None
        source = _source(engine, prediction_topic, image_topic, realtime, writer, state)
        started = time.perf_counter()
        try:
            _feed(reader, topics, image_topic, label_topic, source, state, writer, progress)
        finally:
            if writer is not None:
                writer.close()
        run = ReplayRun(
            bag=Path(bag),
            storage=reader.storage,
            image_topic=image_topic,
            image_type=image_type,
            runner=source.runner,
            label_topic=label_topic,
            prediction_topic=prediction_topic,
            weights=None if weights is None else Path(weights),
            realtime=realtime,
            wall_s=time.perf_counter() - started,
            read_error=reader.read_error,
            warnings=list(reader.warnings),
            damaged_messages=reader.damaged_messages,
            bag_damage=reader.damage(),
        )
        state.expire(None)
        report = build_report(run, state)
    report["outputs"] = write_report(report, state, out, has_bag=write_bag)
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")  # null, never NaN
    return report


def _new_state(info: WeightsInfo, images_in_bag: int) -> ReplayState:
    """The empty replay state for a bag of ``images_in_bag`` images scored against ``info``'s classes."""
    return ReplayState(
        info=info,
        lut=palette_lut(info.palette),
        strip_indices={int(i) for i in np.linspace(0, max(images_in_bag - 1, 0), STRIP_FRAMES)},
        matrix=ConfusionMatrix(info.num_classes, info.ignore_index),
        images_in_bag=images_in_bag,
    )


def _open_writer(out: Path, storage: str) -> BagWriter:
    """A fresh ``segmented/`` bag under ``out`` in the input's storage (an older one is replaced)."""
    shutil.rmtree(out / "segmented", ignore_errors=True)
    return BagWriter(out / "segmented", storage)


def _source(engine: SegmentationEngine | None, prediction_topic: str | None, image_topic: str, realtime: bool,
            writer: BagWriter | None, state: ReplayState) -> PredictionSource:
    """The predictions: the node's, recorded on ``prediction_topic`` (no engine), or ``engine``'s, run now."""
    if engine is None:
        return RecordedSource(prediction_topic, state)
    return EngineSource(engine, realtime, writer, output_topics(image_topic), state)


def require_topics(reader: BagReader, image_topic: str, label_topic: str | None = None,
                   prediction_topic: str | None = None) -> str:
    """The image topic's message type; TopicNotFoundError or UnsupportedMessageError for a topic replay cannot use."""
    image_type = reader.require_topic(image_topic, IMAGE_TYPES)
    for extra in (label_topic, prediction_topic):
        if extra:
            reader.require_topic(extra, IMAGE_TYPES)
    return image_type


def check_bag(bag: str | Path, image_topic: str, label_topic: str | None = None,
              prediction_topic: str | None = None) -> None:
    """Raise BagError now for a bag or topics ``replay`` would refuse (before an engine is built for it)."""
    with BagReader(bag) as reader:
        require_topics(reader, image_topic, label_topic, prediction_topic)


def _feed(reader: BagReader, topics: list[str], image_topic: str, label_topic: str | None,
          source: PredictionSource, state: ReplayState, writer: BagWriter | None, progress: bool) -> None:
    """Read the bag once in log-time order: labels into the state, images and recorded predictions to ``source``."""
    bar = progress_bar(total=state.images_in_bag, desc="seg-replay", unit="frame", disable=not progress)
    try:
        for message in reader.messages(topics):
            stamp = stamp_ns(message.message)
            if writer is not None:
                writer.write_raw(message.topic, message.msgtype, message.raw, message.log_time_ns)
            state.expire(message.log_time_ns)
            if message.topic != image_topic:
                try:
                    labels = decode_label(message.message, message.msgtype)
                except (ImageDecodeError, BagError) as error:
                    state.label_failures += message.topic == label_topic
                    state.note(f"{message.topic} stamped {stamp} ns unreadable: {error}")
                    continue
                if message.topic == label_topic:
                    state.add_label(stamp, message.log_time_ns, labels)
                else:
                    source.add_recorded(stamp, message.log_time_ns, labels)
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
            source.submit(tag, frame, color_order)
        source.close()
    finally:
        bar.close()
