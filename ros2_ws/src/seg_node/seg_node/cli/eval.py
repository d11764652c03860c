"""seg-eval: accuracy of weights on a labelled list, at the data set's full resolution.

Every image goes through the engine the node runs (torch fp32 by default,
network input = the image's size; --network-size HEIGHT WIDTH resizes every
image to the size the node is set to run, and the labels back, to score the
masks a node at that size publishes). Prints a per-class IoU table, mIoU, pixel
accuracy and model-only fps; with --json writes them as JSON, plus a PNG bar
chart of per-class IoU and a PNG of image / truth / prediction triples. No
test-time tricks unless --multi-scale or --flip is given (these run the
PyTorch model on its own, fp32, after the engine's pre-processing).
--by-drive adds a row per drive (CamVid's file names start with it: 0006R0_f02400.jpg), as
validation on a drive the weights never trained on is what predicts a new road:

    seg-eval --weights cgnet_camvid --data ../shared/datasets/camvid \
        --list configs/splits/camvid/drive_0006R0.txt
    seg-eval --data ../shared/datasets/camvid --list val.txt --by-drive

Exit status 0: every image scored; 1: unusable weights or data (a weights JSON
with a bad field, a missing or unreadable image, a label of the wrong size), or
nothing scored (no label pixel holds a class); 2: a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..datasets import DatasetSpec, camvid, cityscapes, drive_of, image_folder
from ..errors import UsageError
from ..evaluation.evaluate import AugmentedPredictor, EnginePredictor, evaluate, write_outputs
from ..metrics import format_iou_table
from ..weights import WeightsInfo, find_weights, load_weights
from . import EXIT_FAILURE, HelpFormatter, entry_point
from .engine_flags import add_engine_arguments, engine_config_from_args

FORMATS = ("camvid", "cityscapes", "folder")
MULTI_SCALES = (0.75, 1.0, 1.25, 1.5)
ENGINE_FLAGS = ("backend", "precision", "device", "network_size", "threads", "engine_cache_dir", "cuda_graphs",
                "int8_calibration_dir")
ENGINE_DEFAULTS = {"backend": "torch", "precision": "fp32"}  # the reference figure; any backend can be asked for
ENGINE_HELPS = {"network_size": "network input (height, width) in pixels, as the node's network_size; "
                                "unset: each image's own size"}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-eval", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--weights", default="", help="weights .safetensors or a shipped name; empty: cgnet_camvid")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--list", default="val.txt", help="CamVid list file, or the Cityscapes split")
    parser.add_argument("--format", choices=FORMATS, default="camvid", help="layout of the data set")
    parser.add_argument("--classes", help="class table YAML/JSON for --format folder")
    parser.add_argument("--json", type=Path, help="write the report here (plus .iou.png and .examples.png beside it)")
    parser.add_argument("--multi-scale", action="store_true",
                        help=f"average scales {', '.join(map(str, MULTI_SCALES))}")
    parser.add_argument("--flip", action="store_true", help="also average the mirrored image")
    parser.add_argument("--by-drive", action="store_true",
                        help="also an mIoU per drive, the file-name prefix before the first '_'")
    add_engine_arguments(parser, ENGINE_FLAGS, ENGINE_DEFAULTS, ENGINE_HELPS)
    return parser


def dataset_from_args(args: argparse.Namespace) -> DatasetSpec:
    if args.format == "camvid":
        return camvid(args.data, args.list)
    if args.format == "cityscapes":
        return cityscapes(args.data, args.list)
    if not args.classes:
        raise UsageError("--format folder needs --classes, the class table")
    return image_folder(Path(args.data) / "images", Path(args.data) / "labels", args.classes)


def augmented_predictor(args: argparse.Namespace, model: torch.nn.Module, info: WeightsInfo) -> AugmentedPredictor:
    """--multi-scale / --flip: the PyTorch model at fp32 on the asked device."""
    if args.network_size is not None:
        raise UsageError("--multi-scale and --flip scale each image itself; drop --network-size")
    if args.backend not in ("auto", "torch") or args.precision not in ("auto", "fp32"):
        raise UsageError("--multi-scale and --flip run the PyTorch model at fp32; "
                         "drop --backend/--precision or set them to torch/fp32")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but this torch has no usable CUDA")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    scales = MULTI_SCALES if args.multi_scale else (1.0,)
    return AugmentedPredictor(model.to(device), info, device, scales, args.flip)


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    weights = find_weights(args.weights)
    model, info = load_weights(weights)
    spec = dataset_from_args(args)
    if spec.num_classes != info.num_classes:
        raise UsageError(f"{weights} has {info.num_classes} classes but the data set has {spec.num_classes}")
    if args.multi_scale or args.flip:
        predictor = augmented_predictor(args, model, info)
    else:
        predictor = EnginePredictor(model, info, engine_config_from_args(args))
    try:
        evaluation = evaluate(predictor, spec, examples=4, progress=True, description=weights.stem,
                              group_of=drive_of if args.by_drive else None)
        device, backend = str(predictor.device), predictor.backend  # named by the engines, before they close
    finally:
        if isinstance(predictor, EnginePredictor):
            predictor.close()
    extra = {
        "weights": str(weights),
        "model": info.describe(),
        "list": str(args.list),
        "model_fps": len(spec.pairs) / predictor.network_seconds if predictor.network_seconds else None,
        "device": device,
        "backend": backend,
        "multi_scale": args.multi_scale,
        "flip": args.flip,
        "network_size": args.network_size,  # None: each image's own size
    }
    if args.by_drive:
        names = [c.name for c in info.classes]
        extra["drives"] = {drive: matrix.report(names) for drive, matrix in sorted(evaluation.groups.items())}
    report = evaluation.matrix.report([c.name for c in info.classes]) | extra
    if args.json:
        report = write_outputs(evaluation, info, args.json, f"{weights.stem} on {args.list}", extra)
    print(format_iou_table(report))
    for drive, scores in report.get("drives", {}).items():
        miou = "-" if scores["miou"] is None else f"{100 * scores['miou']:.2f}%"
        print(f"drive {drive}: mIoU {miou} over {scores['images']} images")
    fps = report["model_fps"]
    size = "each image's size" if args.network_size is None else "x".join(map(str, args.network_size))
    print(f"images {report['images']}, network input {size}, model-only fps {'-' if fps is None else f'{fps:.1f}'} "
          f"on {device}")
    if report["miou"] is None:
        print(f"seg-eval: nothing was scored: the {report['images']} labels hold no class of {weights.name} "
              "(every pixel is ignored or out of range)", file=sys.stderr)
        return EXIT_FAILURE
    return 0


main = entry_point("seg-eval", _main)


if __name__ == "__main__":
    sys.exit(main())
