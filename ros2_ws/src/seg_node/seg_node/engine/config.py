"""What the engine is asked to do (EngineConfig) and what it gives back (SegResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EngineError

BACKENDS = ("auto", "torch2trt", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
DEVICES = ("auto", "cuda", "cpu")
OUTPUT_RESOLUTIONS = ("input", "network")
COLOR_ORDERS = ("rgb", "bgr")


@dataclass
class EngineConfig:
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    network_size: tuple[int, int] | None = None  # (H, W); None: the weights' input_size
    output_resolution: str = "input"  # labels at the frame's size ("input") or at network_size ("network")
    confidence: bool = False  # also return max softmax x 255 as uint8
    threads: int | None = None  # CPU threads for the network; None: all cores
    engine_cache_dir: str | None = None  # None: ~/.cache/seg_node/engines
    cuda_graphs: bool = False
    int8_calibration_dir: str | None = None

    def validate(self) -> None:
        """Raise EngineError naming the field and its allowed values."""
        for name, allowed in (
            ("backend", BACKENDS),
            ("precision", PRECISIONS),
            ("device", DEVICES),
            ("output_resolution", OUTPUT_RESOLUTIONS),
        ):
            if getattr(self, name) not in allowed:
                raise EngineError(f"EngineConfig.{name}={getattr(self, name)!r}; choose one of {list(allowed)}")
        if self.network_size is not None:
            size = tuple(self.network_size)
            if len(size) != 2 or not all(isinstance(v, int) and v >= 16 for v in size):
                raise EngineError(f"EngineConfig.network_size={self.network_size!r}; give (height, width), each >= 16")
        if self.threads is not None and self.threads < 1:
            raise EngineError(f"EngineConfig.threads={self.threads}; give a positive count or None")


@dataclass
class SegResult:
    labels: np.ndarray | None  # uint8 H x W class ids; None when the frame failed
    confidence: np.ndarray | None  # uint8 H x W, max softmax x 255, when asked for
    tag: Any  # the caller's identity object (e.g. a ROS header), returned untouched
    stream: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "network", "total" (submit -> result), ...
    error: Exception | None = None
