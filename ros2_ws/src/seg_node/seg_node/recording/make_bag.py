"""A rosbag2 recording from image/label pairs, as a camera and an annotator would publish them.

    seg-make-bag OUT --list ../shared/datasets/camvid/val.txt --first 0 --count 40 --rate 10 --format jpeg

Images go out as sensor_msgs/CompressedImage (JPEG files are stored byte for
byte, so a replay sees the very pixels an evaluation of the files sees) or as
raw rgb8 sensor_msgs/Image; labels as mono8 Image on a second topic with the
same header stamps. MCAP by default (zstd chunks), sqlite3 optional. The
console script is ``seg_node.cli.make_bag``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..datasets import DatasetError
from ..errors import UsageError
from ..progress import progress_bar
from .rosbag import BagWriter, compressed_message, image_message

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_LABEL_TOPIC = "/camera/labels"
# 2023-11-14 22:13:20 UTC: a fixed start keeps bags made from the same files identical.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
IMAGE_FORMATS = ("jpeg", "raw")


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"{path} is missing or not an image OpenCV reads")
    return image


def _jpeg_bytes(path: Path, quality: int | None) -> bytes:
    """The file itself when it is a JPEG and no quality is asked, else a fresh encoding."""
    if quality is None and path.suffix.lower() in (".jpg", ".jpeg"):
        return path.read_bytes()
    ok, encoded = cv2.imencode(".jpg", _read(path, cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, quality or 90])
    if not ok:
        raise DatasetError(f"{path} could not be encoded as JPEG")
    return encoded.tobytes()


def make_bag(
    out: str | Path,
    pairs: list[tuple[Path, Path | None]],
    *,
    rate_hz: float = 10.0,
    image_format: str = "jpeg",
    jpeg_quality: int | None = None,
    storage: str = "mcap",
    image_topic: str | None = None,
    label_topic: str = DEFAULT_LABEL_TOPIC,
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
    progress: bool = True,
) -> Path:
    """Write ``pairs`` as a recording at ``rate_hz``; labels (where given) share their image's stamp."""
    if image_format not in IMAGE_FORMATS:
        raise UsageError(f"image format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if not 0 < rate_hz <= 1e9:  # NaN fails too; over 1 GHz two frames would share a nanosecond stamp
        raise UsageError(f"the rate must be above 0 and at most 1e9 frames per second, got {rate_hz}")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise UsageError(f"the JPEG quality must be 1 to 100, got {jpeg_quality}")
    if not pairs:
        raise UsageError("no image/label pairs given (check --first and --count against the list)")
    if image_topic is None:
        image_topic = DEFAULT_IMAGE_TOPIC + ("/compressed" if image_format == "jpeg" else "")
    period_ns = round(1e9 / rate_hz)
    with BagWriter(Path(out), storage) as writer:
        bar = progress_bar(pairs, desc="seg-make-bag", disable=not progress)
        for index, (image_path, label_path) in enumerate(bar):
            stamp = start_ns + index * period_ns
            if image_format == "jpeg":
                message = compressed_message(_jpeg_bytes(image_path, jpeg_quality), "jpeg", stamp, frame_id)
            else:
                rgb = cv2.cvtColor(_read(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                message = image_message(rgb, "rgb8", stamp, frame_id)
            writer.write(image_topic, message, stamp)
            if label_path is not None:
                label = _read(label_path, cv2.IMREAD_UNCHANGED)
                if label.ndim != 2 or label.dtype != np.uint8:
                    raise DatasetError(f"{label_path} is not a single-channel 8-bit label image")
                writer.write(label_topic, image_message(label, "mono8", stamp, frame_id), stamp)
    return Path(out)
