"""What the engine gives back for a frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SegResult:
    labels: np.ndarray | None  # uint8 H x W class ids; None when the frame failed
    confidence: np.ndarray | None  # uint8 H x W, max softmax x 255; None when not computed for this frame
    tag: Any  # the caller's identity object (e.g. a ROS header), returned untouched
    stream: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "network", "total" (submit -> result), ...
    error: Exception | None = None
