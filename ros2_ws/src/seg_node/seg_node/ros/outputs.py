"""What the node publishes per camera, and how one engine result becomes those messages.

Runs on the pipeline's result thread. Images go out as serialized bytes (ros/image_cdr.py says why).
Only the label is always published; the colour mask, overlay, confidence and camera_info are made only
while someone subscribes to them. The confidence is not even computed otherwise: the node asks the
engine for it per frame (``CameraOutputs.wants_confidence``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..engine import SegResult
from ..imaging import blend, colorize, to_rgb
from .conversions import output_camera_info
from .diagnostics import CameraMonitor
from .image_cdr import image_cdr
from .parameters import Camera


@dataclass
class CameraOutputs:
    """One camera's publishers (lifecycle publishers: silent unless the node is active) and its state."""

    camera: Camera
    monitor: CameraMonitor
    label: Publisher
    color_mask: Publisher
    overlay: Publisher
    confidence: Publisher | None  # only with publish_confidence (the engine can compute it then)
    camera_info: Publisher
    info: CameraInfo | None = None  # the newest CameraInfo of the input camera
    info_missing_logged: bool = field(default=False)

    def wants_confidence(self) -> bool:
        """Whether the engine should compute the confidence of this camera's next frame: only while subscribed."""
        return self.confidence is not None and self.confidence.get_subscription_count() > 0

    def publishers(self) -> list[Publisher]:
        found = [self.label, self.color_mask, self.overlay, self.confidence, self.camera_info]
        return [publisher for publisher in found if publisher is not None]


@dataclass(frozen=True)
class FrameTag:
    """What travels with a frame through the pipeline: where it came from and what the outputs need."""

    outputs: CameraOutputs
    header: Header
    image: np.ndarray | None  # the decoded input, kept only while someone watches the overlay
    color_order: str
    input_size: tuple[int, int]  # the decoded frame's H, W (for camera_info scaling)


class RateLimitedLog:
    """Log a recurring problem once per period and per key, with how many were left out."""

    def __init__(self, node: Node, period_s: float) -> None:
        self._node = node
        self._period_s = period_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def warn(self, key: tuple[str, str], message: str) -> None:
        self._log(key, message, self._node.get_logger().warning)

    def error(self, key: tuple[str, str], message: str) -> None:
        self._log(key, message, self._node.get_logger().error)

    def _log(self, key: tuple[str, str], message: str, log: Callable[[str], object]) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -np.inf) < self._period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" ({suppressed} more like it in the last {self._period_s:.0f} s)" if suppressed else ""
        log(message + more)


def publish_outputs(tag: FrameTag, result: SegResult, palette: np.ndarray, overlay_alpha: float) -> list[str]:
    """Publish ``result`` on the outputs of ``tag``'s camera that are wanted; the names of those published."""
    outputs = tag.outputs
    outputs.label.publish(image_cdr(result.labels, tag.header))
    published = ["label"]
    want_mask = outputs.color_mask.get_subscription_count() > 0
    want_overlay = tag.image is not None and outputs.overlay.get_subscription_count() > 0
    if want_mask or want_overlay:
        mask = colorize(result.labels, palette)
        if want_mask:
            outputs.color_mask.publish(image_cdr(mask, tag.header))
            published.append("color_mask")
        if want_overlay:
            overlay = blend(to_rgb(tag.image, tag.color_order), mask, overlay_alpha)
            outputs.overlay.publish(image_cdr(overlay, tag.header))
            published.append("overlay")
    confidence = outputs.confidence
    if confidence is not None and result.confidence is not None and confidence.get_subscription_count() > 0:
        confidence.publish(image_cdr(result.confidence, tag.header))
        published.append("confidence")
    info = outputs.info
    if info is not None and outputs.camera_info.get_subscription_count() > 0:
        outputs.camera_info.publish(output_camera_info(info, tag.input_size, result.labels.shape[:2], tag.header))
        published.append("camera_info")
    return published
