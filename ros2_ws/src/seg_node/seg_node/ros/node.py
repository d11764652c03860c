"""seg_node: a thin rclpy adapter over the segmentation engine.

Threads: the executor thread decodes each camera message (a view for rgb8/bgr8) and submits it to the
engine's FramePipeline, which never blocks and keeps only the newest waiting frame per camera. The
pipeline's result callback colourises, blends and publishes; inference never runs on the executor.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from ..engine import EngineError, FrameError, SegmentationEngine, SegResult, create_engine
from ..errors import SegNodeError
from ..imaging import ImageDecodeError, blend, colorize, palette_lut, to_rgb
from ..weights import WeightsError, find_weights, read_info
from .conversions import frame_from_message, image_message
from .diagnostics import ERROR, OK, CameraMonitor, key_values
from .parameters import Camera, NodeSettings, ParameterError, check_runtime_change, declare_parameters

NODE_NAME = "seg_node"
LOG_EVERY_S = 5.0  # the same problem on the same camera is logged at most this often


class StartupError(SegNodeError, RuntimeError):
    """The node cannot start: bad parameters, missing or mismatched weights, an unavailable backend."""


@dataclass
class CameraOutputs:
    camera: Camera
    monitor: CameraMonitor
    label: Publisher
    color_mask: Publisher
    overlay: Publisher
    confidence: Publisher | None


@dataclass(frozen=True)
class FrameTag:
    """What travels with a frame through the pipeline: where it came from and what the outputs need."""

    outputs: CameraOutputs
    header: Header
    image: np.ndarray | None  # the decoded input, kept only while someone watches the overlay
    color_order: str


class RateLimitedLog:
    """Log a recurring problem once per period and per key, with how many were left out."""

    def __init__(self, node: Node, period_s: float) -> None:
        self._node = node
        self._period_s = period_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def warn(self, key: tuple[str, str], message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -np.inf) < self._period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" ({suppressed} more like it in the last {self._period_s:.0f} s)" if suppressed else ""
        self._node.get_logger().warning(message + more)


def sensor_qos(settings: NodeSettings) -> QoSProfile:
    """Camera subscriptions: sensor data by default (best effort, keep last 1), per REP-2003."""
    reliable = settings.qos_reliability == "reliable"
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth, reliability=reliability)


def output_qos(settings: NodeSettings) -> QoSProfile:
    # Reliable publishers serve both reliable (RViz's default) and best-effort subscribers (REP-2003).
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth, reliability=ReliabilityPolicy.RELIABLE)


class SegmentationNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.settings = declare_parameters(self)
            self.weights_path = find_weights(self.settings.weights)
            self.engine = self._create_engine()
        except (ParameterError, WeightsError, EngineError) as error:
            raise StartupError(str(error)) from error
        self._log = RateLimitedLog(self, LOG_EVERY_S)
        self._palette_lut = palette_lut(self.settings.palette or np.asarray(self.engine.info.palette).ravel())
        self._overlay_alpha = self.settings.overlay_alpha
        started = time.monotonic()
        self.cameras = [self._camera_outputs(camera, started) for camera in self.settings.cameras]
        self._classes = self.create_publisher(
            String, "~/classes", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pipeline = self.engine.pipeline(on_result=self._on_result)
        for outputs in self.cameras:
            message_type = CompressedImage if outputs.camera.compressed else Image
            self.create_subscription(
                message_type,
                outputs.camera.topic,
                lambda message, outputs=outputs: self._on_frame(outputs, message),
                sensor_qos(self.settings),
            )
        self.add_on_set_parameters_callback(check_runtime_change)
        self.add_post_set_parameters_callback(self._apply_runtime_change)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        self._publish_classes()
        self.get_logger().info(
            f"segmenting {', '.join(c.resolved for c in self.settings.cameras)} with "
            f"{self.engine.describe()}; outputs under {self.get_fully_qualified_name()}/<camera>/"
        )

    def _create_engine(self) -> SegmentationEngine:
        try:
            return create_engine(self.weights_path, self.settings.engine)
        except RuntimeError as error:
            if isinstance(error, (WeightsError, EngineError)):
                raise
            # torch's own errors, e.g. tensors of other shapes than the JSON promises
            expected = read_info(self.weights_path).describe()
            raise StartupError(f"cannot load {self.weights_path} (its JSON describes {expected}): {error}") from error

    def _camera_outputs(self, camera: Camera, started: float) -> CameraOutputs:
        qos = output_qos(self.settings)
        prefix = f"~/{camera.name}"
        return CameraOutputs(
            camera=camera,
            monitor=CameraMonitor(camera.name, camera.resolved, started),
            label=self.create_publisher(Image, f"{prefix}/label", qos),
            color_mask=self.create_publisher(Image, f"{prefix}/color_mask", qos),
            overlay=self.create_publisher(Image, f"{prefix}/overlay", qos),
            confidence=(
                self.create_publisher(Image, f"{prefix}/confidence", qos) if self.settings.engine.confidence else None
            ),
        )

    # --- executor thread: decode and hand over -------------------------------------------------------
    def _on_frame(self, outputs: CameraOutputs, message: Image | CompressedImage) -> None:
        outputs.monitor.input(time.monotonic())
        try:
            frame, color_order = frame_from_message(message)
        except ImageDecodeError as error:
            outputs.monitor.bad_frame(str(error))
            self._log.warn((outputs.camera.name, "decode"), f"camera {outputs.camera.name}: bad frame: {error}")
            return
        keep_image = outputs.overlay.get_subscription_count() > 0
        tag = FrameTag(outputs, message.header, frame if keep_image else None, color_order)
        self.pipeline.submit(frame, tag=tag, stream=outputs.camera.name, color_order=color_order)

    # --- pipeline thread: colourise, blend, publish ---------------------------------------------------
    def _on_result(self, result: SegResult) -> None:
        tag: FrameTag = result.tag
        outputs = tag.outputs
        name = outputs.camera.name
        if result.error is not None:
            if isinstance(result.error, FrameError):
                outputs.monitor.bad_frame(str(result.error))
                self._log.warn((name, "frame"), f"camera {name}: the engine refused a frame: {result.error}")
            else:
                outputs.monitor.engine_error(str(result.error))
                self._log.warn((name, "engine"), f"camera {name}: engine failure: {result.error!r}")
            return
        try:
            self._publish_outputs(tag, result)
        except Exception as error:  # a failed publish must not end the pipeline's thread
            if rclpy.ok(context=self.context):
                self._log.warn((name, "publish"), f"camera {name}: publishing failed: {error!r}")

    def _publish_outputs(self, tag: FrameTag, result: SegResult) -> None:
        outputs = tag.outputs
        outputs.label.publish(image_message(result.labels, tag.header))
        published = ["label"]
        want_mask = outputs.color_mask.get_subscription_count() > 0
        want_overlay = tag.image is not None and outputs.overlay.get_subscription_count() > 0
        if want_mask or want_overlay:
            mask = colorize(result.labels, self._palette_lut)
            if want_mask:
                outputs.color_mask.publish(image_message(mask, tag.header))
                published.append("color_mask")
            if want_overlay:
                overlay = blend(to_rgb(tag.image, tag.color_order), mask, self._overlay_alpha)
                outputs.overlay.publish(image_message(overlay, tag.header))
                published.append("overlay")
        confidence = outputs.confidence
        if confidence is not None and result.confidence is not None and confidence.get_subscription_count() > 0:
            confidence.publish(image_message(result.confidence, tag.header))
            published.append("confidence")
        stamp = tag.header.stamp
        latency_s = None  # an unstamped input has no end-to-end latency
        if stamp.sec or stamp.nanosec:
            latency_s = (self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9
        outputs.monitor.output(published, latency_s)

    # --- timers and parameters ------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        cameras = []
        for outputs in self.cameras:
            status = outputs.monitor.report(
                now,
                dropped=self.pipeline.stats(outputs.camera.name).dropped,
                expected_fps=self.settings.expected_fps,
                input_timeout_s=self.settings.input_timeout_s,
            )
            status.hardware_id = self.get_fully_qualified_name()
            cameras.append(status)
        failed = [status.message for status in cameras if status.level == ERROR]
        array = DiagnosticArray(status=[self._engine_status(failed), *cameras])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _engine_status(self, failures: list[str]) -> DiagnosticStatus:
        """The node's engine: what runs, and ERROR while it fails on frames."""
        engine = self.engine
        height, width = engine.network_size
        values = {
            "backend": engine.backend_name,
            "precision": engine.precision,
            "device": engine.device,
            "model": engine.info.describe(),
            "weights": str(self.weights_path),
            "input_resolution": f"{width}x{height}",
            "output_resolution": self.settings.engine.output_resolution,
            "cameras": ", ".join(outputs.camera.name for outputs in self.cameras),
        }
        return DiagnosticStatus(
            level=ERROR if failures else OK,
            name="seg_node: engine",
            message="; ".join(failures) if failures else engine.describe(),
            hardware_id=self.get_fully_qualified_name(),
            values=key_values(values),
        )

    def _publish_classes(self) -> None:
        info = self.engine.info
        classes = [
            {"id": c.id, "name": c.name, "color": self._palette_lut[c.id].tolist()} for c in info.classes
        ]
        document = {"model": info.describe(), "dataset": info.dataset, "ignore_index": info.ignore_index}
        self._classes.publish(String(data=json.dumps({**document, "classes": classes})))

    def _apply_runtime_change(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "overlay_alpha":
                self._overlay_alpha = float(parameter.value)
            elif parameter.name == "palette":
                colors = list(parameter.value or []) or np.asarray(self.engine.info.palette).ravel()
                self._palette_lut = palette_lut(colors)
                self._publish_classes()
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Stop the pipeline (joins its threads) and free the engine; safe after ROS has shut down."""
        self.pipeline.close(timeout=1.0)
        self.engine.close()


def run(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C (0) or report why it cannot start (1)."""
    rclpy.init(args=args)
    node = None
    try:
        node = SegmentationNode()
        rclpy.spin(node)
    except StartupError as error:
        rclpy.logging.get_logger(NODE_NAME).error(f"cannot start: {error}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main() -> NoReturn:
    """``ros2 run seg_node seg_node`` and ``python -m seg_node``."""
    code = run()
    # Everything the node owns is closed; the interpreter's own teardown (torch's above all) takes about
    # a second more, which would make Ctrl-C feel slow, so the process ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
