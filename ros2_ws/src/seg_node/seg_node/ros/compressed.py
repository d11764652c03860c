"""Outputs that travel over Wi-Fi: ``~/<camera>/<output>/compressed``, as image_transport names them.

Each of label, color_mask, overlay (and confidence, with publish_confidence) has a sensor_msgs/CompressedImage
sibling, filled as compressed_image_transport fills it, so RViz and Foxglove subscribed with the compressed
transport decode it: PNG for the label, the colour mask and the confidence, which must stay lossless (class
ids and colours), JPEG for the overlay, a photo; ``format`` is "<encoding>; <png|jpeg> compressed <target>"
with target bgr8 for colour and nothing for mono8 ("mono8; png compressed ", "rgb8; jpeg compressed bgr8").
Quality and level are the transport's defaults (JPEG 95, PNG level 3).

Nothing is encoded while nobody subscribes. Encoding runs on a thread of its own, neither on the executor
nor on the engine pipeline's result thread: per camera and output the newest frame waits, a newer one
replaces it (a slow Wi-Fi subscriber costs frames of its stream, not the node's rate).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from ..engine import SegResult
from ..imaging import blend, colorize, to_rgb
from .topics import COMPRESSED_SUFFIX, output_topic

log = logging.getLogger(__name__)

# output -> compression; lossless where the values are data
COMPRESSIONS = {"label": "png", "color_mask": "png", "overlay": "jpeg", "confidence": "png"}
JPEG_QUALITY = 95  # compressed_image_transport's defaults
PNG_LEVEL = 3


def compress(image: np.ndarray, compression: str) -> CompressedImage:
    """A mono8 (HxW) or rgb8 (HxWx3) image as compressed_image_transport sends it (header left to the caller)."""
    if image.ndim == 2:
        encoding, target, pixels = "mono8", "", image
    else:
        encoding, target, pixels = "rgb8", "bgr8", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if compression == "png":
        ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    else:
        ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {encoding} {image.shape} image as {compression}")
    return CompressedImage(format=f"{encoding}; {compression} compressed {target}", data=data.tobytes())


@dataclass
class _Frame:
    """What the encoder needs of one result: the images are made on its thread, only as subscribed."""

    header: Header
    result: SegResult
    image: np.ndarray | None  # the decoded input, for the overlay
    color_order: str
    palette: np.ndarray
    overlay_alpha: float


class CompressedOutputs:
    """The compressed publishers of every camera, and the thread that encodes for them."""

    def __init__(self, node: LifecycleNode, qos: QoSProfile, cameras: list[str], confidence: bool) -> None:
        self._node = node
        outputs = [output for output in COMPRESSIONS if confidence or output != "confidence"]
        self._publishers: dict[str, dict[str, Publisher]] = {
            camera: {
                output: node.create_lifecycle_publisher(
                    CompressedImage, output_topic(camera, output) + COMPRESSED_SUFFIX, qos
                )
                for output in outputs
            }
            for camera in cameras
        }
        self._waiting: OrderedDict[str, _Frame] = OrderedDict()  # per camera, its newest frame not yet encoded
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._encode_loop, name="seg-compress", daemon=True)
        self._thread.start()

    def subscribed(self, camera: str, output: str | None = None) -> bool:
        """Whether someone subscribes to the camera's compressed ``output`` (any output when None)."""
        publishers = self._publishers[camera]
        chosen = publishers.values() if output is None else [publishers[output]] if output in publishers else []
        return any(publisher.get_subscription_count() > 0 for publisher in chosen)

    def submit(self, camera: str, header: Header, result: SegResult, image: np.ndarray | None, color_order: str,
               palette: np.ndarray, overlay_alpha: float) -> None:
        """Encode this result for the camera's compressed subscribers, later, on the encoder's thread."""
        if not self.subscribed(camera):
            return
        with self._changed:
            if self._closed:
                return
            self._waiting[camera] = _Frame(header, result, image, color_order, palette, overlay_alpha)
            self._changed.notify()

    def close(self) -> None:
        """Stop the encoder (a frame being encoded is finished) and destroy the publishers."""
        with self._changed:
            self._closed = True
            self._waiting.clear()
            self._changed.notify_all()
        self._thread.join(timeout=1.0)
        for publishers in self._publishers.values():
            for publisher in publishers.values():
                self._node.destroy_lifecycle_publisher(publisher)
        self._publishers = {}

    def _encode_loop(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                camera, frame = self._waiting.popitem(last=False)
            try:
                self._publish(camera, frame)
            except Exception:  # noqa: BLE001 - one frame's failure must not end the encoder
                log.exception("encoding a compressed output of camera %s failed", camera)

    def _publish(self, camera: str, frame: _Frame) -> None:
        publishers = self._publishers.get(camera, {})
        wanted = {output for output, publisher in publishers.items() if publisher.get_subscription_count() > 0}
        images = {"label": frame.result.labels, "confidence": frame.result.confidence}
        if wanted & {"color_mask", "overlay"}:
            images["color_mask"] = colorize(frame.result.labels, frame.palette)
            if frame.image is not None:
                images["overlay"] = blend(to_rgb(frame.image, frame.color_order), images["color_mask"],
                                          frame.overlay_alpha)
        for output in wanted:
            if images.get(output) is None:
                continue  # no confidence computed for this frame, or the input was not kept
            message = compress(images[output], COMPRESSIONS[output])
            message.header = frame.header
            publishers[output].publish(message)
