"""``seg-split-drives``: list files by drive, so that validation measures a road the weights never saw.

    seg-split-drives --data ../shared/datasets/camvid --lists train.txt val.txt --out configs/splits/camvid

CamVid's frames are named ``<drive>_<frame>``; its ``val.txt`` is all drive 0016E5, as are 204 of the
367 frames of ``train.txt``, seconds apart, so val scores a drive the weights trained on. This writes
``drive_<name>.txt`` for every drive found in the lists (every frame of it, from all the lists), in
the lists' own ``image label`` format. The recipes train on two drives and validate on the third:
``--train-list "[configs/splits/camvid/drive_0001TP.txt, configs/splits/camvid/drive_0016E5.txt]"
--val-list configs/splits/camvid/drive_0006R0.txt``.

``--classes`` then reads every label and prints, per drive, each CamVid class's share of the drive's labelled
pixels and the frames that hold it: a class that is rare on the validation drive (Bicyclist is 0.07% of
0006R0's pixels, in 14 of its 101 frames) makes that drive's mIoU swing with a few thousand pixels.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..datasets import DatasetSpec, camvid, class_support, lines_by_drive, write_drive_lists
from . import HelpFormatter, entry_point


def print_class_support(by_drive: dict[str, DatasetSpec]) -> None:
    """One row per class: its share of each drive's labelled pixels, and in how many of the drive's frames it is."""
    support = {drive: class_support(spec) for drive, spec in by_drive.items()}
    print("\nclass support by drive: % of the drive's labelled pixels, frames holding the class / frames")
    print(f"{'class':<12} " + " ".join(f"{drive:>16}" for drive in support))
    classes = next(iter(by_drive.values())).classes
    for index, segment_class in enumerate(classes):
        cells = []
        for drive, (pixels, frames) in support.items():
            share = 100.0 * pixels[index] / max(1, pixels.sum())
            cells.append(f"{share:6.2f}% {f'{frames[index]}/{len(by_drive[drive].pairs)}':>8}")
        print(f"{segment_class.name:<12} " + " ".join(f"{cell:>16}" for cell in cells))


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-split-drives", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the data set's folder (the lists' paths start there)")
    parser.add_argument("--lists", nargs="+", default=["train.txt", "val.txt"], help="'image label' lists to split")
    parser.add_argument("--out", type=Path, required=True, help="folder for drive_<name>.txt (created if missing)")
    parser.add_argument("--separator", default="_", help="the character that ends the drive's name in a file name")
    parser.add_argument("--classes", action="store_true",
                        help="also print each CamVid class's share of every drive's pixels, and its frames")
    args = parser.parse_args(argv)
    by_drive = lines_by_drive(args.data, args.lists, args.separator)
    written = write_drive_lists(by_drive, args.out)
    print(f"{'drive':<12} {'frames':>6}  list file")
    for drive, lines in by_drive.items():
        print(f"{drive:<12} {len(lines):>6}  {written[drive]}")
    if args.classes:
        print_class_support({drive: camvid(args.data, [str(path)]) for drive, path in written.items()})
    return 0


main = entry_point("seg-split-drives", _main)


if __name__ == "__main__":
    sys.exit(main())
