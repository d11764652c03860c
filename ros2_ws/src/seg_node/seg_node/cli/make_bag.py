"""seg-make-bag: a rosbag2 recording from image/label pairs, as a camera and an annotator would publish them.

    seg-make-bag OUT --list ../shared/datasets/camvid/val.txt --first 0 --count 40 --rate 10 --format jpeg

Images go out as sensor_msgs/CompressedImage (JPEG files byte for byte) or as
raw rgb8 sensor_msgs/Image; labels as mono8 Image on a second topic with the
same header stamps.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..datasets import read_pair_list
from ..errors import UsageError
from ..recording.make_bag import DEFAULT_IMAGE_TOPIC, DEFAULT_LABEL_TOPIC, DEFAULT_START_NS, IMAGE_FORMATS, make_bag
from ..recording.rosbag import STORAGES
from . import HelpFormatter, entry_point


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-make-bag", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("out", type=Path, help="the rosbag2 directory to create (must not exist)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", type=Path, help="text file of 'image label' lines (CamVid's val.txt works)")
    source.add_argument("--images", type=Path, nargs="+", help="image files, in order (labels optional)")
    parser.add_argument("--labels", type=Path, nargs="+", help="label files for --images, same order")
    parser.add_argument("--root", type=Path, help="folder the --list paths are relative to; unset: the list's folder")
    parser.add_argument("--first", type=int, default=0, help="index of the first pair to use")
    parser.add_argument("--count", type=int, help="number of pairs; unset: all from --first")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the recording")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="jpeg", help="CompressedImage JPEG or rgb8 Image")
    parser.add_argument("--jpeg-quality", type=int, help="re-encode at this quality; unset: JPEG files as they are")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--image-topic", help=f"unset: {DEFAULT_IMAGE_TOPIC}, with /compressed for --format jpeg")
    parser.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="topic of the labels")
    parser.add_argument("--frame-id", default="camera", help="header frame_id of every message")
    parser.add_argument("--start-ns", type=int, default=DEFAULT_START_NS, help="stamp of the first frame")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.list is not None:
        pairs = read_pair_list(args.root or args.list.parent, args.list)
    else:
        if args.labels is not None and len(args.labels) != len(args.images):
            raise UsageError(f"{len(args.images)} --images but {len(args.labels)} --labels; give one label per image")
        pairs = list(zip(args.images, args.labels or [None] * len(args.images), strict=True))
    if args.first < 0 or (args.count is not None and args.count < 1):
        raise UsageError("--first must be 0 or more and --count 1 or more")
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
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    return 0


main = entry_point("seg-make-bag", _main)


if __name__ == "__main__":
    sys.exit(main())
