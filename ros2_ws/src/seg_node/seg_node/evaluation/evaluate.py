"""Accuracy of a model on a labelled data set, through the engine the node runs (the library of ``seg-eval``).

``EnginePredictor`` segments each image with ``create_engine_from_model`` and
``engine.infer`` at the image's own resolution: the same pre-processing
(``engine.graph.Preprocess``), network and argmax as the node, so a figure
here is the node's figure. ``AugmentedPredictor`` is for test-time
augmentation (several scales, the mirror image): it needs the logits, so it
runs the PyTorch model itself, after the engine's ``Preprocess``.
``evaluate_model`` is the one call for "this in-memory model on this data set"
(the trainer's validation); ``evaluate`` runs any predictor.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import DatasetSpec
from ..engine import EngineConfig, SegmentationEngine, create_engine_from_model
from ..engine.graph import Preprocess
from ..imaging import colorize, palette_lut
from ..metrics import ConfusionMatrix, score_frame
from ..plots import plot_class_iou, save_image_grid
from ..progress import progress_bar
from ..weights import WeightsInfo

Predictor = Callable[[np.ndarray], np.ndarray]  # RGB uint8 H x W x 3 -> uint8 labels H x W
MAX_ENGINES = 4  # engines kept for data sets with images of several sizes
MIN_SCALED_SIDE = 8


def weights_info_for(model: nn.Module, mean: Sequence[float], std: Sequence[float], spec: DatasetSpec | None = None,
                     input_size: tuple[int, int] = (0, 0)) -> WeightsInfo:
    """A WeightsInfo for a model that has no weights file yet (a model in training): its normalisation and classes."""
    return WeightsInfo(
        architecture=type(model).__name__.lower(),
        variant=dict(getattr(model, "variant", {})),
        classes=list(spec.classes) if spec is not None else [],
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        input_size=tuple(input_size),
        dataset=spec.name if spec is not None else "",
        splits=[],
        ignore_index=spec.ignore_index if spec is not None else None,
    )


class EnginePredictor:
    """RGB uint8 frame -> uint8 labels through the node's engine, at the frame's own resolution.

    ``config`` chooses backend, precision, device and threads. Its ``network_size``, when set, is the network
    input for every frame (resized to it and the labels back, as the node's ``network_size`` parameter does);
    unset, the network size is each frame's size. One engine per network size, made on first use (an engine
    resizes frames of any size); the labels come back at the frame's size. ``model``'s train/eval mode is left
    as it was. Close it (or use it as a context manager) to free the engines.
    """

    def __init__(self, model: nn.Module, info: WeightsInfo, config: EngineConfig | None = None) -> None:
        self.model = model
        self.info = info
        self.config = config or EngineConfig()
        self.engines: OrderedDict[tuple[int, int], SegmentationEngine] = OrderedDict()
        self.network_seconds = 0.0

    def engine(self, size: tuple[int, int]) -> SegmentationEngine:
        if size in self.engines:
            self.engines.move_to_end(size)
            return self.engines[size]
        config = dataclasses.replace(self.config, network_size=size, output_resolution="input", confidence=False)
        was_training = self.model.training
        try:
            engine = create_engine_from_model(self.model, self.info, config)
        finally:
            self.model.train(was_training)
        self.engines[size] = engine
        if len(self.engines) > MAX_ENGINES:
            self.engines.popitem(last=False)[1].close()
        return engine

    @property
    def device(self) -> str | None:
        """The device the engines run on (None before the first frame)."""
        return next(iter(self.engines.values())).device if self.engines else None

    @property
    def backend(self) -> str | None:
        """The backend the engines run (None before the first frame)."""
        return next(iter(self.engines.values())).backend_name if self.engines else None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        network_size = self.config.network_size or tuple(frame.shape[:2])
        result = self.engine(tuple(network_size)).infer(frame, color_order="rgb")
        self.network_seconds += result.timings["network"]
        return result.labels

    def close(self) -> None:
        while self.engines:
            self.engines.popitem()[1].close()

    def __enter__(self) -> EnginePredictor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AugmentedPredictor:
    """RGB uint8 frame -> uint8 labels with the PyTorch model over ``scales`` (and mirrored with ``flip``).

    Each scale is normalised and resized by the engine's ``Preprocess``; the softmax of every pass, brought back
    to the frame's size, is summed and the argmax taken. Runs fp32 on ``device``.
    """

    def __init__(self, model: nn.Module, info: WeightsInfo, device: torch.device | str = "cpu",
                 scales: Sequence[float] = (1.0,), flip: bool = False) -> None:
        self.model = model
        self.info = info
        self.device = torch.device(device)
        self.scales = tuple(scales)
        self.flip = flip
        self.backend = "torch model, test-time augmentation"
        self.network_seconds = 0.0
        self._preprocess: dict[tuple[int, int], Preprocess] = {}

    def preprocess(self, size: tuple[int, int]) -> Preprocess:
        if size not in self._preprocess:
            self._preprocess[size] = Preprocess(self.info, size).to(self.device)
        return self._preprocess[size]

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)[None]
        height, width = frame.shape[:2]
        scores = None
        start = time.perf_counter()
        for scale in self.scales:
            size = (max(MIN_SCALED_SIDE, round(height * scale)), max(MIN_SCALED_SIDE, round(width * scale)))
            scaled = self.preprocess(size)(pixels)
            batch = torch.cat([scaled, scaled.flip(3)]) if self.flip else scaled
            logits = self.model(batch)
            if self.flip:
                logits = logits[:1] + logits[1:].flip(3)
            if size != (height, width):
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
    groups: dict[str, ConfusionMatrix] = field(default_factory=dict)  # e.g. per drive, when asked for


def evaluate(
    predict: Predictor, spec: DatasetSpec, examples: int = 0, progress: bool = False, description: str = "eval",
    group_of: Callable[[Path], str] | None = None,
) -> Evaluation:
    """Run ``predict`` over every pair of ``spec`` into a confusion matrix; keep a few (image, truth, pred).

    ``group_of``: also a matrix per group of images, named by this function of the image's path (e.g. its drive).
    """
    result = Evaluation(ConfusionMatrix(spec.num_classes, spec.ignore_index))
    keep = set(np.linspace(0, len(spec.pairs) - 1, examples).round().astype(int).tolist()) if examples else set()
    start = time.perf_counter()
    for index in progress_bar(range(len(spec.pairs)), desc=description, disable=not progress, unit="img"):
        image, truth = spec.read(index)
        prediction = predict(image)
        score_frame(result.matrix, truth, prediction)
        if group_of is not None:
            group = group_of(spec.pairs[index][0])
            if group not in result.groups:
                result.groups[group] = ConfusionMatrix(spec.num_classes, spec.ignore_index)
            score_frame(result.groups[group], truth, prediction)
        if index in keep:
            result.examples.append((image, truth, prediction))
    result.seconds = time.perf_counter() - start
    return result


def evaluate_model(
    model: nn.Module,
    info: WeightsInfo | tuple[Sequence[float], Sequence[float]],
    spec: DatasetSpec,
    device: torch.device | str = "cpu",
    *,
    config: EngineConfig | None = None,
    examples: int = 0,
    progress: bool = False,
) -> Evaluation:
    """``model`` (in memory, e.g. in training) on every image of ``spec`` through the node's engine.

    ``info`` is the weights' WeightsInfo or just their normalisation ``(mean, std)``. Unless ``config`` says
    otherwise the engine is torch, fp32, on ``device``'s type, with torch's current thread count; the model's
    train/eval mode is left as it was. ``evaluate_model(...).matrix.miou()`` is the val mIoU.
    """
    if not isinstance(info, WeightsInfo):
        info = weights_info_for(model, *info, spec)
    if config is None:
        device_type = torch.device(device).type
        threads = torch.get_num_threads() if device_type == "cpu" else None
        config = EngineConfig(backend="torch", precision="fp32", device=device_type, threads=threads)
    with EnginePredictor(model, info, config) as predictor:
        return evaluate(predictor, spec, examples=examples, progress=progress)


def write_outputs(evaluation: Evaluation, info: WeightsInfo, out: Path, title: str, extra: dict) -> dict:
    """JSON report, per-class IoU PNG and example triples PNG under ``out`` (a JSON file path)."""
    report = {**evaluation.matrix.report([c.name for c in info.classes]), **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")  # null, never NaN
    plot_class_iou(report["per_class_iou"], info.palette, title, out.with_suffix(".iou.png"))
    if evaluation.examples:
        lut = palette_lut(info.palette)  # ids without a colour (void) are black
        rows = [(image, colorize(t, lut), colorize(p, lut)) for image, t, p in evaluation.examples]
        save_image_grid(rows, ["image", "truth", "prediction"], out.with_suffix(".examples.png"))
    return report
