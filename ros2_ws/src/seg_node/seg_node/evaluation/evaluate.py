"""``seg-eval``: accuracy of weights on a labelled list, at the data set's full resolution.

Prints a per-class IoU table, mIoU, pixel accuracy and model-only fps; writes
them as JSON, plus a PNG bar chart of per-class IoU and a PNG of image /
truth / prediction triples. No test-time tricks unless ``--multi-scale`` or
``--flip`` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..datasets import DatasetSpec, camvid, cityscapes, image_folder
from ..imaging import colorize, palette_lut
from ..metrics import ConfusionMatrix, format_iou_table
from ..plots import plot_class_iou, save_image_grid
from ..weights import WeightsInfo, find_weights, load_weights

Predictor = Callable[[np.ndarray], np.ndarray]


class ModelPredictor:
    """RGB uint8 frame -> uint8 labels with the PyTorch model itself, optionally multi-scale and flipped."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.scales = tuple(scales)
        self.flip = flip
        self.network_seconds = 0.0

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float()
        x = (x - self.mean) / self.std
        height, width = frame.shape[:2]
        scores = None
        start = time.perf_counter()
        for scale in self.scales:
            size = (max(8, round(height * scale)), max(8, round(width * scale)))
            scaled = x if scale == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            batch = torch.cat([scaled, scaled.flip(3)]) if self.flip else scaled
            logits = self.model(batch)
            if self.flip:
                logits = logits[:1] + logits[1:].flip(3)
            if scale != 1.0:
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(1)
            scores = probabilities if scores is None else scores + probabilities
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.network_seconds += time.perf_counter() - start
        self.model.train(was_training)
        return scores[0].argmax(0).to(torch.uint8).cpu().numpy()


@dataclass
class Evaluation:
    matrix: ConfusionMatrix
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(
    predict: Predictor, spec: DatasetSpec, examples: int = 0, progress: bool = False, description: str = "eval"
) -> Evaluation:
    """Run ``predict`` over every pair of ``spec`` into a confusion matrix; keep a few (image, truth, pred)."""
    result = Evaluation(ConfusionMatrix(spec.num_classes, spec.ignore_index))
    keep = set(np.linspace(0, len(spec.pairs) - 1, examples).round().astype(int).tolist()) if examples else set()
    start = time.perf_counter()
    for index in tqdm(range(len(spec.pairs)), desc=description, disable=not progress, unit="img"):
        image, truth = spec.read(index)
        prediction = predict(image)
        result.matrix.update(truth, prediction)
        if index in keep:
            result.examples.append((image, truth, prediction))
    result.seconds = time.perf_counter() - start
    return result


def write_outputs(evaluation: Evaluation, info: WeightsInfo, out: Path, title: str, extra: dict) -> dict:
    """JSON report, per-class IoU PNG and example triples PNG under ``out`` (a JSON file path)."""
    report = {**evaluation.matrix.report([c.name for c in info.classes]), **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot_class_iou(report["per_class_iou"], info.palette, title, out.with_suffix(".iou.png"))
    if evaluation.examples:
        lut = palette_lut(info.palette)  # ids without a colour (void) are black
        rows = [(image, colorize(t, lut), colorize(p, lut)) for image, t, p in evaluation.examples]
        save_image_grid(rows, ["image", "truth", "prediction"], out.with_suffix(".examples.png"))
    return report


def dataset_from_args(args: argparse.Namespace) -> DatasetSpec:
    if args.format == "camvid":
        return camvid(args.data, args.list)
    if args.format == "cityscapes":
        return cityscapes(args.data, args.list)
    return image_folder(Path(args.data) / "images", Path(args.data) / "labels", args.classes)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seg-eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--weights", default="", help="weights .safetensors or a shipped name (default cgnet_camvid)")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--list", default="val.txt", help="CamVid list file, or the Cityscapes split (default val.txt)")
    parser.add_argument("--format", choices=["camvid", "cityscapes", "folder"], default="camvid")
    parser.add_argument("--classes", help="class table YAML/JSON for --format folder")
    parser.add_argument("--json", type=Path, help="write the report here (plus .iou.png and .examples.png beside it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--multi-scale", action="store_true", help="average scales 0.75, 1, 1.25, 1.5")
    parser.add_argument("--flip", action="store_true", help="also average the mirrored image")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = find_weights(args.weights)
    model, info = load_weights(weights)
    model.to(args.device)
    spec = dataset_from_args(args)
    if spec.num_classes != info.num_classes:
        parser.error(f"{weights} has {info.num_classes} classes but the data set has {spec.num_classes}")
    scales = (0.75, 1.0, 1.25, 1.5) if args.multi_scale else (1.0,)
    predictor = ModelPredictor(model, info.mean, info.std, args.device, scales, args.flip)
    evaluation = evaluate(predictor, spec, examples=4, progress=True, description=weights.stem)
    extra = {
        "weights": str(weights),
        "model": info.describe(),
        "list": str(args.list),
        "model_fps": len(spec.pairs) / predictor.network_seconds,
        "device": args.device,
        "multi_scale": args.multi_scale,
        "flip": args.flip,
    }
    report = evaluation.matrix.report([c.name for c in info.classes]) | extra
    if args.json:
        report = write_outputs(evaluation, info, args.json, f"{weights.stem} on {args.list}", extra)
    print(format_iou_table(report))
    print(f"images {report['images']}, model-only fps {report['model_fps']:.1f} on {args.device}")


if __name__ == "__main__":
    main()
