"""int8 calibration data: frames from a folder of images or a rosbag2 topic, fed to TensorRT one at a time.

``int8_calibration_dir`` names a folder of images (.png, .jpg, .jpeg, .bmp), or a rosbag2 recording and
an image topic as ``PATH:TOPIC`` (sensor_msgs/Image or CompressedImage, e.g.
``/data/drive1:/camera/image_raw/compressed``). ``load_calibration_frames`` reads up to 64 frames spread
evenly over the data and keeps them on the host as uint8 (a 1024x2048 frame is 6 MB there, against
25 MB as a float on the GPU); ``CalibrationDataset`` uploads and pre-processes one frame per TensorRT
request into a single device buffer, exactly as the engine pre-processes at run time.

The calibration table TensorRT writes is cached in the engine cache, named by ``calibration_table_key``:
the weights, the network size, TensorRT's version and the data's identity (``CalibrationSource.identity``:
its files' names, sizes and modification times), so rebuilding an engine (another GPU, a new torch2trt)
reuses the table instead of calibrating again, and changed data calibrates anew.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import EngineConfigError, EngineError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
BAG_SUFFIXES = (".mcap", ".db3")
CALIBRATION_FRAMES = 64
CALIBRATION_HELP = "a folder of images, or a rosbag2 recording as PATH:TOPIC"


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration frames come from: a folder of images (``topic`` None) or a bag's image topic."""

    path: Path
    topic: str | None = None

    @property
    def is_bag(self) -> bool:
        return self.topic is not None

    def describe(self) -> str:
        return f"{self.path}:{self.topic} (rosbag2)" if self.is_bag else f"{self.path} (folder of images)"

    def files(self) -> list[Path]:
        """The files whose contents the frames come from: the images, or the bag's storage and metadata."""
        if self.is_bag:
            return [self.path] if self.path.is_file() else sorted(p for p in self.path.iterdir() if p.is_file())
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    def identity(self) -> str:
        """SHA-256 of the data's kind, topic and files (name, size, modification time): changed data, new hash."""
        digest = hashlib.sha256(f"{'bag' if self.is_bag else 'folder'}:{self.topic};".encode())
        for file in self.files():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()


def _looks_like_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in BAG_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").is_file()
                              or any(p.suffix in BAG_SUFFIXES for p in path.iterdir()))


def parse_calibration_source(text: str) -> CalibrationSource:
    """``int8_calibration_dir`` as a CalibrationSource; EngineConfigError saying what is wrong with it."""
    text = str(text).strip()
    if not text:
        raise EngineConfigError(f"int8_calibration_dir is empty; give {CALIBRATION_HELP}")
    whole = Path(text).expanduser()
    if whole.is_dir() and not _looks_like_bag(whole):
        return CalibrationSource(whole)
    if _looks_like_bag(whole):
        raise EngineConfigError(f"int8_calibration_dir {text} is a rosbag2 recording: name the image topic too, "
                                f"as {text}:/camera/image_raw")
    path, sep, topic = text.rpartition(":")
    if sep and topic.startswith("/") and path:
        bag = Path(path).expanduser()
        if not bag.exists():
            raise EngineConfigError(f"int8_calibration_dir {text}: the recording {bag} does not exist")
        if not _looks_like_bag(bag):
            raise EngineConfigError(f"int8_calibration_dir {text}: {bag} is not a rosbag2 recording "
                                    f"(no metadata.yaml, {' or '.join(BAG_SUFFIXES)} file)")
        return CalibrationSource(bag, topic)
    raise EngineConfigError(f"int8_calibration_dir {text} is neither an existing folder nor PATH:TOPIC; "
                            f"give {CALIBRATION_HELP}")


def _spread(total: int, count: int) -> int:
    return max(1, total // count) if count > 0 else 1


def _folder_frames(source: CalibrationSource, count: int) -> list[np.ndarray]:
    # OpenCV only where calibration images are read: the engine itself runs without it (seg-gpu-check)
    import cv2

    from ..imaging import to_rgb

    files = source.files()
    if not files:
        raise EngineError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {source.path} to calibrate int8 with")
    frames = []
    for path in files[:: _spread(len(files), count)][:count]:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise EngineError(f"{path} is not a readable image (int8 calibration)")
        frames.append(to_rgb(frame, "bgr"))
    return frames


def _bag_frames(source: CalibrationSource, count: int) -> list[np.ndarray]:
    from ..imaging import ImageDecodeError, to_rgb
    from ..recording.rosbag import IMAGE_TYPES, BagError, BagReader, decode_image

    try:
        with BagReader(source.path) as reader:
            reader.require_topic(source.topic, IMAGE_TYPES)
            step = _spread(reader.counts.get(source.topic, 0), count)
            frames, skipped = [], 0
            for index, message in enumerate(reader.messages([source.topic])):
                if index % step:
                    continue
                try:
                    image, order = decode_image(message.message, message.msgtype)
                except ImageDecodeError as error:
                    skipped += 1
                    log.warning("int8 calibration: skipped a frame of %s: %s", source.describe(), error)
                    continue
                frames.append(np.array(to_rgb(image, order), copy=True))  # owned, not a view of the message
                if len(frames) == count:
                    break
    except BagError as error:
        raise EngineConfigError(f"int8_calibration_dir {source.path}:{source.topic}: {error}") from error
    if not frames:
        raise EngineError(f"no decodable frames on {source.describe()} to calibrate int8 with ({skipped} skipped)")
    return frames


def load_calibration_frames(source: CalibrationSource, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Up to ``count`` frames spread evenly over ``source``: host uint8 H x W x 3 RGB arrays."""
    frames = _bag_frames(source, count) if source.is_bag else _folder_frames(source, count)
    log.info("int8 calibration: %d frames from %s", len(frames), source.describe())
    return frames


def calibration_table_key(source: CalibrationSource, architecture: str, weights_sha256: str,
                          network_size: tuple[int, int], tensorrt_version: str) -> dict[str, Any]:
    """The engine-cache key of a calibration table: what the scales depend on, not the GPU or torch2trt."""
    return {
        "kind": "int8-calibration-table",
        "architecture": architecture,
        "weights_sha256": weights_sha256,
        "input_shape": [1, 3, *network_size],
        "calibration_data": source.identity(),
        "frames": CALIBRATION_FRAMES,
        "tensorrt": tensorrt_version,
    }


class CalibrationDataset:
    """torch2trt's ``int8_calib_dataset``: item i is frame i uploaded and pre-processed, as ``[tensor]``.

    The frames stay on the host as uint8; each item is written into one persistent contiguous NCHW
    float buffer on ``device`` (TensorRT reads it before it asks for the next item, so one buffer
    suffices), and the device is synchronised before the buffer's address is handed over.
    """

    def __init__(self, frames: list[np.ndarray], preprocess: torch.nn.Module, network_size: tuple[int, int],
                 device: str | torch.device = "cuda", on_progress: Callable[[str], None] | None = None) -> None:
        if not frames:
            raise EngineError("int8 calibration needs at least one frame")
        self.frames = frames
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.buffer = torch.empty(1, 3, *network_size, device=self.device)
        self.on_progress = on_progress

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        if not 0 <= index < len(self.frames):
            raise IndexError(index)
        with torch.no_grad():
            frame = torch.from_numpy(self.frames[index]).to(self.device)[None]
            self.preprocess(frame, None, out=self.buffer)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        if self.on_progress is not None:
            self.on_progress(f"calibrating int8: {index + 1}/{len(self.frames)}")
        return [self.buffer]
