"""Models, frames and the two reference segmenters of the GPU check, from PyTorch and NumPy alone.

``load_model`` reads the shipped weights (``weights/<name>_camvid.safetensors`` + JSON) with
``seg_node.weights``, which reads the format itself where safetensors is not installed, or, without shipped
weights, builds the same architecture with random weights whose BatchNorm statistics come from frames.
Frames are smooth random images made here (no data set, no OpenCV).
``reference_labels`` is the eager fp32 model with the engine's normalisation; ``naive_segmenter`` is what
a first implementation does, the speed baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.graph import normalize
from ..models import build_model
from ..weights import SegClass, WeightsError, WeightsInfo, find_weights, load_weights, tensor_reader

MODELS = ("cgnet", "contextnet")
NUM_CLASSES = 11  # CamVid's
UNTRAINED_MEAN = (104.0, 112.0, 120.0)
UNTRAINED_STD = (58.0, 57.0, 59.0)
UNTRAINED_SIZE = (360, 480)


def make_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random uint8 H x W x 3 RGB frames (blobs at two scales), so labels form regions as in images."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(count):
        image = torch.zeros(1, 3, height, width)
        for cells, weight in ((24, 0.7), (6, 0.3)):
            coarse = torch.rand(1, 3, max(2, height // cells), max(2, width // cells), generator=generator)
            image += weight * F.interpolate(coarse * 255.0, size=(height, width), mode="bilinear", align_corners=False)
        frames.append(np.ascontiguousarray(image[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()))
    return frames


def untrained_info(name: str, variant: dict) -> WeightsInfo:
    classes = [SegClass(i, f"class{i}", (20 * i, 255 - 20 * i, 7 * i)) for i in range(NUM_CLASSES)]
    return WeightsInfo(name, dict(variant), classes, UNTRAINED_MEAN, UNTRAINED_STD, UNTRAINED_SIZE, "none", [])


def random_model(name: str, seed: int = 0) -> tuple[nn.Module, WeightsInfo]:
    """``name`` with random weights; BatchNorm statistics from frames, so activations keep their scale."""
    torch.manual_seed(seed)
    model = build_model(name, NUM_CLASSES)
    info = untrained_info(name, getattr(model, "variant", {}))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    frames = torch.from_numpy(np.stack(make_frames(4, 96, 128, seed=seed))).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        model.train()(normalize(frames, info))
    return model.eval(), info


def load_model(name: str) -> tuple[nn.Module, WeightsInfo, str]:
    """(model in eval mode on the CPU, its info, where its weights came from) for ``cgnet`` or ``contextnet``."""
    try:
        path = find_weights(f"{name}_camvid")
    except WeightsError as error:
        model, info = random_model(name)
        return model, info, f"random-init ({error})"
    try:
        model, info = load_weights(path)
        return model, info, f"{path.name} ({tensor_reader()})"
    except WeightsError as error:
        model, info = random_model(name)
        return model, info, f"random-init ({error})"


def eager_copy(model: nn.Module, device: str) -> nn.Module:
    """The model as written (no BatchNorm folding, default memory format), fp32 on ``device``."""
    return copy.deepcopy(model).float().to(device).eval()


def reference_labels(eager: nn.Module, info: WeightsInfo, frame: np.ndarray, network_size: tuple[int, int],
                     device: str, at_network_size: bool = False) -> np.ndarray:
    """Labels of an RGB ``frame`` by the eager fp32 model: the engine's resize and normalisation, its
    argmax at network size and (unless ``at_network_size``) nearest-neighbour resize to the frame's size,
    done the obvious way."""
    with torch.inference_mode():
        image = torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float()
        if tuple(image.shape[2:]) != tuple(network_size):
            image = F.interpolate(image, size=tuple(network_size), mode="bilinear", align_corners=False)
        labels = eager(normalize(image, info)).argmax(1, keepdim=True).to(torch.uint8)
        if not at_network_size and tuple(labels.shape[2:]) != frame.shape[:2]:
            labels = F.interpolate(labels, size=frame.shape[:2], mode="nearest")
        return labels[0, 0].cpu().numpy()


def naive_segmenter(eager: nn.Module, info: WeightsInfo, device: str, color_order: str = "rgb"
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """The typical first implementation, for comparison: eager fp32, float pre-processing on the host
    (the channel swap of ``bgr`` frames too), the full logits copied back (a synchronisation per frame),
    argmax on the host. Frames at network size."""
    mean, std = np.float32(info.mean), np.float32(info.std)

    def segment(frame: np.ndarray) -> np.ndarray:
        rgb = frame[..., ::-1] if color_order == "bgr" else frame
        image = (rgb.astype(np.float32) - mean) / std
        with torch.no_grad():
            logits = eager(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device)).cpu().numpy()
        return logits[0].argmax(0).astype(np.uint8)

    return segment
