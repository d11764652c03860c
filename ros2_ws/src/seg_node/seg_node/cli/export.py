"""``seg-export``: a training checkpoint to shippable weights (and optionally ONNX).

seg-export runs/cgnet_drives/last.pt weights/cgnet_camvid_drives.safetensors [--onnx out.onnx]
seg-export runs/cgnet_alldrives/last.pt weights/cgnet_camvid.safetensors \
    --twin weights/cgnet_camvid_drives.safetensors

The JSON lists every training stage (those of the ``--init`` weights first) with its splits, drives,
recipe, steps and hardware. Weights that trained on their validation frames (or drive) state no val
mIoU of their own; ``--twin`` names the weights of the same recipe trained without them (on the drive
split: 0001TP + 0016E5, validated on 0006R0), whose mIoU is the recipe's figure on an unseen drive.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..models.export import export_onnx
from ..training.checkpoint import export_checkpoint
from ..weights import load_weights
from . import HelpFormatter, entry_point


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg-export", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a seg-train checkpoint (best.pt or last.pt)")
    parser.add_argument("weights", type=Path, help="output .safetensors; the .json is written beside it")
    parser.add_argument("--onnx", type=Path, help="also write ONNX at the weights' input size")
    parser.add_argument(
        "--twin", "--train-only-twin", dest="twin", type=Path,
        help="for weights that trained on their validation frames: the same recipe's weights trained without them",
    )
    args = parser.parse_args(argv)
    path = export_checkpoint(args.checkpoint, args.weights, args.twin)
    model, info = load_weights(path)
    print(f"{path}: {info.describe()}, {info.epochs} epochs, splits {info.splits}, "
          f"val mIoU {info.val_miou} on {info.val_list}")
    if args.onnx:
        export_onnx(model, args.onnx, *info.input_size)
        print(f"{args.onnx}: ONNX opset 17 at {info.input_size[0]}x{info.input_size[1]}")
    return 0


main = entry_point("seg-export", _main)


if __name__ == "__main__":
    sys.exit(main())
