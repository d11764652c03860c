"""Pre- and post-processing as torch modules, so they run where the network runs.

The frame enters as uint8 N x H x W x 3 (a channels-last view, no host-side
float conversion); pre-processing orders the channels, converts to float,
resizes to the network size and normalises. Post-processing takes the argmax
(and optionally the max softmax) at network resolution, packs them as uint8,
and resizes that small uint8 map with nearest neighbour: only uint8 leaves
the device. ``EndToEnd`` chains all three for the ONNX export.

Normalisation lives here and only here: ``Preprocess.normalize`` (or the
function ``normalize(image, info)``) turns a float N x 3 x h x w RGB image
in 0..255 into the network's input, ``(pixel - mean) / std`` with the
weights' mean and std, computed exactly as the engine computes it. Code that
feeds a network outside the engine (evaluation, export checks) should call
it rather than repeat the formula, so both see the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..weights import WeightsInfo
from .errors import FrameError

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
        if order is not None:
            frame = frame.index_select(3, order)  # on uint8, before the 4x larger float exists
        image = frame.permute(0, 3, 1, 2).float()
        if tuple(image.shape[2:]) != self.network_size:
            image = F.interpolate(image, size=self.network_size, mode="bilinear", align_corners=False)
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
