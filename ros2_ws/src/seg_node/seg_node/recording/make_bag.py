"""``seg-make-bag``: a rosbag2 recording from image/label pairs, as a camera and an annotator would publish them.

    seg-make-bag OUT --list ../shared/datasets/camvid/val.txt --first 0 --count 40 --rate 10 --format jpeg

Images go out as sensor_msgs/CompressedImage (JPEG files are stored byte for
byte, so a replay sees the very pixels an evaluation of the files sees) or as
raw rgb8 sensor_msgs/Image; labels as mono8 Image on a second topic with the
same header stamps. MCAP by default (zstd chunks), sqlite3 optional.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..datasets import DatasetError, read_pair_list
from .rosbag import STORAGES, BagError, BagWriter, compressed_message, image_message

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_LABEL_TOPIC = "/camera/labels"
# 2023-11-14 22:13:20 UTC: a fixed start keeps bags made from the same files identical.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"{path} is missing or not an image OpenCV reads")
    return image


def _jpeg_bytes(path: Path, quality: int | None) -> bytes:
    """The file itself when it is a JPEG and no quality is asked, else a fresh encoding."""
    if quality is None and path.suffix.lower() in (".jpg", ".jpeg"):
        return path.read_bytes()
    ok, encoded = cv2.imencode(".jpg", _read(path, cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, quality or 90])
    if not ok:
        raise ValueError(f"{path} could not be encoded as JPEG")
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
    if image_format not in ("jpeg", "raw"):
        raise ValueError(f"image format {image_format!r} is not 'jpeg' or 'raw'")
    if rate_hz <= 0:
        raise ValueError(f"rate must be positive, got {rate_hz}")
    if not pairs:
        raise ValueError("no image/label pairs given")
    if image_topic is None:
        image_topic = DEFAULT_IMAGE_TOPIC + ("/compressed" if image_format == "jpeg" else "")
    period_ns = round(1e9 / rate_hz)
    with BagWriter(Path(out), storage) as writer:
        for index, (image_path, label_path) in enumerate(tqdm(pairs, desc="seg-make-bag", disable=not progress)):
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
                    raise ValueError(f"{label_path} is not a single-channel 8-bit label image")
                writer.write(label_topic, image_message(label, "mono8", stamp, frame_id), stamp)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-make-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the rosbag2 directory to create (must not exist)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", type=Path, help="text file of 'image label' lines (CamVid's val.txt works)")
    source.add_argument("--images", type=Path, nargs="+", help="image files, in order (labels optional)")
    parser.add_argument("--labels", type=Path, nargs="+", help="label files for --images, same order")
    parser.add_argument("--root", type=Path, help="folder the --list paths are relative to (default: its folder)")
    parser.add_argument("--first", type=int, default=0, help="index of the first pair to use")
    parser.add_argument("--count", type=int, help="number of pairs (default: all from --first)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the recording")
    parser.add_argument("--format", choices=("jpeg", "raw"), default="jpeg", help="CompressedImage JPEG or rgb8 Image")
    parser.add_argument("--jpeg-quality", type=int, help="re-encode at this quality (default: JPEG files as they are)")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--image-topic", help=f"default {DEFAULT_IMAGE_TOPIC}[/compressed]")
    parser.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC)
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--start-ns", type=int, default=DEFAULT_START_NS, help="stamp of the first frame")
    args = parser.parse_args(argv)
    try:
        if args.list is not None:
            pairs = read_pair_list(args.root or args.list.parent, args.list)
        else:
            if args.labels is not None and len(args.labels) != len(args.images):
                parser.error(f"{len(args.images)} --images but {len(args.labels)} --labels")
            pairs = list(zip(args.images, args.labels or [None] * len(args.images), strict=True))
        end = None if args.count is None else args.first + args.count
        out = make_bag(
            args.out,
            pairs[args.first : end],
            rate_hz=args.rate,
            image_format=args.format,
            jpeg_quality=args.jpeg_quality,
            storage=args.storage,
            image_topic=args.image_topic,
            label_topic=args.label_topic,
            frame_id=args.frame_id,
            start_ns=args.start_ns,
        )
    except (BagError, DatasetError, ValueError, OSError) as error:
        print(f"seg-make-bag: {error}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
