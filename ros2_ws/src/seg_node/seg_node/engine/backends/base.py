"""The interface every backend implements: three stages over reusable slots.

A frame moves through ``prepare`` (validate, copy to the device, pre-process)
into an input slot, ``execute`` (network, argmax) from an input slot into an
output slot, and ``collect`` (wait, copy the uint8 maps back) out of the
output slot. The synchronous ``SegmentationEngine.infer`` runs the three in
a row; ``FramePipeline`` runs them in three threads over two input and two
output slots, so the stages of consecutive frames overlap. Both run the same
code, which is why their results are bit-identical.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Maps:
    labels: np.ndarray  # uint8 H x W
    confidence: np.ndarray | None  # uint8 H x W; None when not computed for this frame
    network_seconds: float | None = None  # device-timed network time where the device can time it


class Backend(ABC):
    name: str
    device: str
    precision: str
    network_size: tuple[int, int]

    @abstractmethod
    def new_input_slot(self) -> Any:
        """Buffers for one frame between prepare and execute."""

    @abstractmethod
    def new_output_slot(self) -> Any:
        """Buffers for one frame's maps between execute and collect."""

    @abstractmethod
    def prepare(self, slot: Any, frame: np.ndarray, color_order: str) -> None:
        """Validate ``frame`` (raise FrameError) and bring it, pre-processed, into ``slot``."""

    @abstractmethod
    def execute(self, source: Any, target: Any, confidence: bool) -> None:
        """Run the network and the argmax on ``source``; leave the uint8 maps in ``target``.

        ``confidence``: this frame's confidence map is wanted; the engine passes True only to a backend built
        with confidence. With False, ``collect`` gives ``Maps.confidence`` None and the backend skips what
        it can of the max softmax (at least its copy back). ``source`` may be reused as soon as this returns.
        """

    @abstractmethod
    def collect(self, slot: Any) -> Maps:
        """Wait for ``slot``'s maps and return them as host arrays the caller owns."""

    def describe(self) -> str:
        height, width = self.network_size
        return f"{self.name} on {self.device}, {self.precision}, network input {height}x{width}"

    @abstractmethod
    def synchronize(self) -> None:
        """Wait for device work in flight, so that slots can be dropped safely (a no-op on CPU)."""

    @abstractmethod
    def close(self) -> None:
        """Free what the backend holds beyond its slots."""
