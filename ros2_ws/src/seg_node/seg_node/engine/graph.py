"""Pre- and post-processing as torch modules, so they run where the network runs.

The frame enters as uint8 N x H x W x 3 (a channels-last view, no host-side
float conversion); pre-processing orders the channels, converts to float,
resizes to the network size and normalises. Post-processing takes the argmax
(and optionally the max softmax) at network resolution, packs them as uint8,
and resizes that small uint8 map with nearest neighbour: only uint8 leaves
the device. ``EndToEnd`` chains all three for the ONNX export. On the CPU the
torch backend does that last resize on the host instead (``resize_maps_on_host``:
two gathers, ~40x cheaper than ``F.interpolate`` at 1920x1080, same result).

Normalisation lives here and only here: ``Preprocess.normalize`` (or the
function ``normalize(image, info)``) turns a float N x 3 x h x w RGB image
in 0..255 into the network's input, ``(pixel - mean) / std`` with the
weights' mean and std, computed exactly as the engine computes it. Code that
feeds a network outside the engine (evaluation, export checks) should call
it rather than repeat the formula, so both see the same numbers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..weights import WeightsInfo
from .errors import FrameError

# Part of the key of exported graphs (the ONNX Runtime backend's cache): a change of what these modules
# compute, or of how they export, gets a fresh export. 2: the channel order is applied after the resize.
GRAPH_VERSION = 2
RGB_ORDER = (0, 1, 2)
BGR_ORDER = (2, 1, 0)


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if the engine can take it, else raise FrameError saying why."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, not {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"a frame must be uint8, got {frame.dtype}; convert with seg_node.imaging first")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError(f"a frame must be H x W x 3, got shape {frame.shape}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise FrameError(f"a frame must be at least 2 x 2 pixels, got {frame.shape[0]} x {frame.shape[1]}")
    if any(stride < 0 for stride in frame.strides):
        frame = np.ascontiguousarray(frame)  # torch cannot view negative strides
    return frame


def channel_order(color_order: str) -> tuple[int, int, int]:
    if color_order == "rgb":
        return RGB_ORDER
    if color_order == "bgr":
        return BGR_ORDER
    raise FrameError(f"color_order={color_order!r}; choose 'rgb' or 'bgr'")


def resize_maps(maps: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Nearest-neighbour resize of uint8 label/confidence maps to ``size`` (None: leave as they are)."""
    if size is None or tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="nearest")


@lru_cache(maxsize=32)
def nearest_indices(source: int, target: int) -> np.ndarray:
    """Which of ``source`` positions each of ``target`` positions takes in ``F.interpolate(mode="nearest")``.

    Taken from torch itself (a resized ramp; float32 holds every index exactly), so ``resize_maps_on_host``
    matches ``resize_maps`` bit for bit on every size pair without copying torch's rounding rule.
    """
    ramp = torch.arange(source, dtype=torch.float32).view(1, 1, source)
    indices = F.interpolate(ramp, size=target, mode="nearest")[0, 0].to(torch.int64).numpy()
    indices.flags.writeable = False  # shared by every caller through the cache
    return indices


def resize_maps_on_host(maps: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``resize_maps`` for uint8 K x h x w host arrays: the same pixels, as two gathers (columns, then rows).

    Widening the h short rows first and then copying whole rows is what makes it cheap: at 1920x1080 from
    96x128 it is one 96 x 1920 gather and 1080 row copies (numpy releases the GIL for both).
    """
    if size is None or tuple(maps.shape[1:]) == tuple(size):
        return maps
    height, width = size
    wide = np.take(maps, nearest_indices(maps.shape[2], width), axis=2)
    return np.take(wide, nearest_indices(maps.shape[1], height), axis=1)


class Preprocess(nn.Module):
    """uint8 N x H x W x 3 (+ channel order) -> normalised float N x 3 x h x w, channels-last.

    Usable on its own: ``Preprocess(info, size)(frames_uint8_nhwc)`` is the
    engine's whole pre-processing, ``Preprocess(info, size).normalize(image)``
    only its normalisation (no resize). With ``out`` (a float N x 3 x h x w
    tensor, e.g. a persistent contiguous NCHW buffer that TensorRT reads) the
    last step writes there, in whatever memory format ``out`` has, so no
    separate ``.contiguous()`` copy is needed.
    """

    def __init__(self, info: WeightsInfo, network_size: tuple[int, int]) -> None:
        super().__init__()
        self.network_size = tuple(network_size)
        std = torch.tensor(info.std, dtype=torch.float32)
        # (pixel - mean) / std as one multiply-add
        self.register_buffer("scale", (1.0 / std).view(1, 3, 1, 1))
        self.register_buffer("shift", (-torch.tensor(info.mean, dtype=torch.float32) / std).view(1, 3, 1, 1))

    def forward(self, frame: torch.Tensor, order: torch.Tensor | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
        # The channels are resized independently, so reordering them before or after the resize gives the
        # same numbers: reorder whichever is smaller, the uint8 frame or the float image at network size.
        resize = tuple(frame.shape[1:3]) != self.network_size
        if order is not None and not resize:
            frame = frame.index_select(3, order)
        image = frame.permute(0, 3, 1, 2).float()
        if resize:
            image = F.interpolate(image, size=self.network_size, mode="bilinear", align_corners=False)
            if order is not None:
                image = image.index_select(1, order)
        return self.normalize(image, out)

    def normalize(self, image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float RGB N x 3 x h x w in 0..255 -> ``(image - mean) / std``, as one multiply-add (any h x w)."""
        if out is None:
            return torch.addcmul(self.shift, image, self.scale)
        return torch.addcmul(self.shift, image, self.scale, out=out)


def normalize(image: torch.Tensor, info: WeightsInfo) -> torch.Tensor:
    """The engine's normalisation of a float RGB N x 3 x h x w image in 0..255 for the weights ``info``."""
    return Preprocess(info, tuple(image.shape[2:])).to(image.device).normalize(image)


class Postprocess(nn.Module):
    """Logits N x C x h x w -> uint8 N x K x H x W: labels, then (with confidence) max softmax x 255.

    ``confidence`` is the default; ``forward(..., confidence=False)`` leaves out the max softmax for one
    call (K = 1), so a frame nobody wants the confidence of does not pay for it. The labels are the same.
    """

    def __init__(self, confidence: bool) -> None:
        super().__init__()
        self.confidence = confidence

    def forward(self, logits: torch.Tensor, size: tuple[int, int] | None = None,
                confidence: bool | None = None) -> torch.Tensor:
        labels = logits.argmax(1, keepdim=True).to(torch.uint8)
        if self.confidence if confidence is None else confidence:
            labels = torch.cat([labels, self.max_softmax(logits)], 1)
        return resize_maps(labels, size)

    def max_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """uint8 N x 1 x h x w: round(255 x max softmax) of float logits N x C x h x w."""
        logits = logits.float()
        # max softmax = 1 / sum(exp(l - max l)), without the C-channel softmax tensor
        peak = logits.amax(1, keepdim=True)
        probability = 1.0 / torch.exp(logits - peak).sum(1, keepdim=True)
        return torch.round(probability * 255.0).to(torch.uint8)


class EndToEnd(nn.Module):
    """uint8 frame + channel order -> uint8 maps at the frame's size or the network's; for ONNX export."""

    def __init__(self, network: nn.Module, info: WeightsInfo, network_size: tuple[int, int], confidence: bool,
                 output_at_input: bool) -> None:
        super().__init__()
        self.preprocess = Preprocess(info, network_size)
        self.network = network
        self.postprocess = Postprocess(confidence)
        self.output_at_input = output_at_input

    def forward(self, frame: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.preprocess(frame, order))
        size = (frame.shape[1], frame.shape[2]) if self.output_at_input else None
        return self.postprocess(logits, size)
