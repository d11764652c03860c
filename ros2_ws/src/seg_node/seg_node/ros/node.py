"""seg_node: a managed (lifecycle) rclpy adapter over the segmentation engine.

States: unconfigured (parameters declared, /diagnostics published) -> configure (parameters checked,
weights loaded, engine built: minutes for TensorRT) -> inactive (engine ready, nothing subscribed) ->
activate (camera and camera_info subscriptions, outputs published) -> active; deactivate unsubscribes and
keeps the engine, cleanup frees it, shutdown works from any state. ``autostart`` (default true)
configures and activates at start, so the node runs without a lifecycle manager.

Threads: the executor thread decodes each camera message (a view for rgb8/bgr8) and submits it to the
engine's FramePipeline, which never blocks and keeps only the newest waiting frame per camera. The
pipeline's result callback colourises, blends and publishes (ros/outputs.py); inference never runs on
the executor. While nobody subscribes to any output of a camera, its frames are counted and nothing more
(image_proc's lazy subscription; /diagnostics says idle); a subscriber starts the work with the next frame.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from ..engine import EngineError, FrameError, SegmentationEngine, SegResult, create_engine
from ..errors import SegNodeError
from ..imaging import ImageDecodeError, palette_lut
from ..weights import WeightsError, find_weights, read_info
from . import label_info
from .abandonable import run_abandonably
from .compressed import CompressedOutputs
from .conversions import frame_from_message, frame_from_serialized
from .diagnostics import ERROR, OK, WARN, CameraMonitor, key_values
from .managed import ManagedNode
from .outputs import CameraOutputs, FrameTag, RateLimitedLog, publish_outputs
from .parameters import SPECS, Camera, NodeSettings, check_runtime_change, declare_parameters, read_settings
from .topics import output_topic, status_name

NODE_NAME = "seg_node"
LOG_EVERY_S = 5.0  # the same problem on the same camera is logged at most this often
BUILDING = "building engine (this can take minutes)"
SUCCESS = TransitionCallbackReturn.SUCCESS
CLOSING_WAIT_S = 0.5  # how long close() waits for the pipeline's threads before the process ends


class StartupError(SegNodeError, RuntimeError):
    """The node cannot start: bad parameters, missing or mismatched weights, an unavailable backend."""


def sensor_qos(settings: NodeSettings) -> QoSProfile:
    """Camera subscriptions: sensor data by default (best effort, keep last 1), per REP-2003."""
    reliable = settings.qos_reliability == "reliable"
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth, reliability=reliability)


def output_qos(settings: NodeSettings) -> QoSProfile:
    # Reliable publishers serve both reliable (RViz's default) and best-effort subscribers (REP-2003).
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth, reliability=ReliabilityPolicy.RELIABLE)


def free_cuda_memory() -> None:
    """Give the caching allocator's free blocks back to the driver (after the engine's tensors are gone)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class SegmentationNode(ManagedNode):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._problems = declare_parameters(self)  # values refused at start: reported by configure
        self.autostart = bool(self.get_parameter("autostart").value)
        self.settings: NodeSettings | None = None
        self.weights_path = None
        self.engine: SegmentationEngine | None = None
        self.pipeline = None
        self.cameras: list[CameraOutputs] = []
        self._compressed: CompressedOutputs | None = None  # ~/<camera>/<output>/compressed
        self._camera_subscriptions: list = []
        self._classes = None
        self._label_info = None  # vision_msgs/LabelInfo, where vision_msgs is installed
        self._palette_lut = palette_lut([])
        self._overlay_alpha = float(self.get_parameter("overlay_alpha").value)
        self.lifecycle_state = "unconfigured"
        self.building = ""  # while configure builds the engine: what it is doing
        self.failure = ""  # why the last configure failed
        self._autostarting = False
        self._closing = False  # close(): the process ends next
        self._log = RateLimitedLog(self, LOG_EVERY_S)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period_s").value
        if "diagnostics_period_s" in self._problems:
            period = SPECS["diagnostics_period_s"].default
        self.create_timer(period, self.publish_diagnostics)  # in every state
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # --- lifecycle transitions ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except SegNodeError as error:  # parameters, weights, backend: the reason is the message
            return self._failed(str(error), TransitionCallbackReturn.FAILURE)
        except Exception as error:  # noqa: BLE001 - anything else: ERROR, and on_error frees what was made
            return self._failed(f"unexpected {error!r}", TransitionCallbackReturn.ERROR)
        finally:
            self.building = ""
        self.failure = ""
        self.lifecycle_state = "inactive"
        self.get_logger().info(f"configured: {self.engine.describe()}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != SUCCESS:
            return result
        for outputs in self.cameras:
            self._subscribe(outputs)
        self.lifecycle_state = "active"
        self._publish_classes()
        self.get_logger().info(
            f"active: segmenting {', '.join(c.resolved for c in self.settings.cameras)}; "
            f"outputs under {self.get_fully_qualified_name()}/<camera>/"
        )
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: cameras unsubscribed, engine kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self._release()
        self.lifecycle_state = "unconfigured"
        self.get_logger().info("unconfigured: engine freed")
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_shutdown(state)
        self._release()
        self.lifecycle_state = "finalized"
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return SUCCESS

    def start(self) -> bool:
        """autostart: configure, then activate; False, with ``failure`` saying why, when either fails."""
        self._autostarting = True
        try:
            if self.trigger_configure() != SUCCESS:
                return False
            if self.trigger_activate() != SUCCESS:
                self.failure = self.failure or "the activate transition failed"
                return False
            return True
        finally:
            self._autostarting = False

    def close(self) -> None:
        """Shut down from any state and free everything; safe after ROS has shut down, and twice. The
        process ends next, so a network run in progress is not awaited (Ctrl-C stops the node within 2 s)."""
        self._closing = True
        if self.lifecycle_state != "finalized":
            try:
                self.trigger_shutdown()
            except Exception:  # noqa: BLE001 - mid-transition (an interrupted configure) has no shutdown
                pass
        self._release()

    # --- configure and release ------------------------------------------------------------------------
    def _configure(self) -> None:
        self.settings = settings = read_settings(self, self._problems)
        self.weights_path = find_weights(settings.weights)
        self._set_building(BUILDING)
        # on a daemon thread, which a signal abandons (a TensorRT build is minutes of uninterruptible C++)
        self.engine = run_abandonably(self._build_engine, self._set_building, "seg-engine-build")
        self._palette_lut = palette_lut(settings.palette or np.asarray(self.engine.info.palette).ravel())
        self._overlay_alpha = settings.overlay_alpha
        started = time.monotonic()
        self.cameras = [self._camera_outputs(camera, started) for camera in settings.cameras]
        self._compressed = CompressedOutputs(self, output_qos(settings), [c.name for c in settings.cameras],
                                             settings.engine.confidence)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._classes = self.create_lifecycle_publisher(String, "~/classes", latched)
        if label_info.available():
            self._label_info = self.create_lifecycle_publisher(label_info.LabelInfo, label_info.TOPIC, latched)
        else:
            self.get_logger().info(label_info.UNAVAILABLE)
        self.pipeline = self.engine.pipeline(on_result=self._on_result)

    def _build_engine(self, report: Callable[[str], None]) -> SegmentationEngine:
        progress = {}
        if "on_progress" in inspect.signature(create_engine).parameters:  # the engine reports its build steps
            progress["on_progress"] = report
        try:
            return create_engine(self.weights_path, self.settings.engine, **progress)
        except RuntimeError as error:
            if isinstance(error, (WeightsError, EngineError)):
                raise
            # torch's own errors, e.g. tensors of other shapes than the JSON promises
            expected = read_info(self.weights_path).describe()
            raise StartupError(f"cannot load {self.weights_path} (its JSON describes {expected}): {error}") from error

    def _set_building(self, message: str) -> None:
        """Log and publish what the engine build is doing now (the executor is busy meanwhile)."""
        self.building = message
        self.get_logger().info(message)
        self.publish_diagnostics()

    def _failed(self, reason: str, code: TransitionCallbackReturn) -> TransitionCallbackReturn:
        self.failure = reason
        if not self._autostarting:  # under autostart, run() says it once: "cannot start: ..."
            self.get_logger().error(f"configure failed: {reason}")
        if code == TransitionCallbackReturn.FAILURE:  # ERROR goes through on_error, which releases
            self._release()
        return code

    def _camera_outputs(self, camera: Camera, started: float) -> CameraOutputs:
        qos = output_qos(self.settings)

        def publisher(output: str, message_type: type = Image) -> Any:
            return self.create_lifecycle_publisher(message_type, output_topic(camera.name, output), qos)

        return CameraOutputs(
            camera=camera,
            monitor=CameraMonitor(camera.name, camera.resolved, started, self.get_fully_qualified_name()),
            label=publisher("label"),
            color_mask=publisher("color_mask"),
            overlay=publisher("overlay"),
            confidence=publisher("confidence") if self.settings.engine.confidence else None,
            camera_info=publisher("camera_info", CameraInfo),
        )

    def _subscribe(self, outputs: CameraOutputs) -> None:
        camera = outputs.camera
        self._camera_subscriptions += [
            # raw Image frames: the serialized bytes, viewed in place (ros/image_cdr.py says why)
            self.create_subscription(
                CompressedImage if camera.compressed else Image,
                camera.topic,
                lambda message, outputs=outputs: self._on_frame(outputs, message),
                sensor_qos(self.settings),
                raw=not camera.compressed,
            ),
            # best effort matches both reliable and best-effort camera drivers; only the newest matters
            self.create_subscription(
                CameraInfo, camera.info_topic, lambda info, outputs=outputs: self._on_camera_info(outputs, info),
                qos_profile_sensor_data,
            ),
        ]

    def _unsubscribe(self) -> None:
        for subscription in self._camera_subscriptions:
            self.destroy_subscription(subscription)
        self._camera_subscriptions = []

    def _release(self) -> None:
        """Unsubscribe, stop the pipeline (joins its threads), free the engine and its GPU memory."""
        self._unsubscribe()
        stopped = True
        if self.pipeline is not None:
            stopped = self.pipeline.close(timeout=CLOSING_WAIT_S if self._closing else 1.0)
            self.pipeline = None
        if self.engine is not None:
            # a network run still in progress holds the engine: cleanup waits for it, the process's end does not
            if stopped or not self._closing:
                on_cuda = str(self.engine.device).startswith("cuda")
                self.engine.close()
                if on_cuda:
                    free_cuda_memory()
            self.engine = None
        for outputs in self.cameras:
            for publisher in outputs.publishers():
                self.destroy_lifecycle_publisher(publisher)
        self.cameras = []
        if self._compressed is not None:
            self._compressed.close()
            self._compressed = None
        for publisher in (self._classes, self._label_info):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._classes = self._label_info = None

    # --- executor thread: decode and hand over -------------------------------------------------------
    def _on_frame(self, outputs: CameraOutputs, message: bytes | CompressedImage) -> None:
        if self.pipeline is None:
            return
        outputs.monitor.input(time.monotonic())
        name, compressed = outputs.camera.name, self._compressed
        if not any(p.get_subscription_count() for p in outputs.publishers()) and not compressed.subscribed(name):
            outputs.monitor.idle()  # image_proc's lazy subscription: no network run that nobody asked for
            return
        try:
            if isinstance(message, bytes):
                frame, color_order, header = frame_from_serialized(message)
            else:
                (frame, color_order), header = frame_from_message(message), message.header
        except ImageDecodeError as error:
            outputs.monitor.bad_frame(str(error))
            self._log.warn((outputs.camera.name, "decode"), f"camera {outputs.camera.name}: bad frame: {error}")
            return
        keep_image = outputs.overlay.get_subscription_count() > 0 or compressed.subscribed(name, "overlay")
        tag = FrameTag(outputs, header, frame if keep_image else None, color_order, frame.shape[:2])
        confidence = outputs.wants_confidence() or compressed.subscribed(name, "confidence")
        self.pipeline.submit(frame, tag=tag, stream=name, color_order=color_order, confidence=confidence)

    def _on_camera_info(self, outputs: CameraOutputs, info: CameraInfo) -> None:
        if outputs.info is None:
            outputs.monitor.camera_info = self.resolve_topic_name(outputs.camera.info_topic)
        outputs.info = info

    # --- pipeline thread: colourise, blend, publish ---------------------------------------------------
    def _on_result(self, result: SegResult) -> None:
        tag: FrameTag = result.tag
        outputs = tag.outputs
        name = outputs.camera.name
        if self.lifecycle_state != "active":
            return  # a frame in flight at deactivate
        if result.error is not None:
            if isinstance(result.error, FrameError):
                outputs.monitor.bad_frame(str(result.error))
                self._log.warn((name, "frame"), f"camera {name}: the engine refused a frame: {result.error}")
            else:
                outputs.monitor.engine_error(str(result.error))
                self._log.warn((name, "engine"), f"camera {name}: engine failure: {result.error!r}")
            return
        if outputs.info is None and not outputs.info_missing_logged:
            outputs.info_missing_logged = True
            self.get_logger().info(
                f"camera {name}: no CameraInfo on {self.resolve_topic_name(outputs.camera.info_topic)} yet; "
                f"segmenting without it, {output_topic(name, 'camera_info')} follows once one arrives"
            )
        try:
            published = publish_outputs(tag, result, self._palette_lut, self._overlay_alpha)
            self._compressed.submit(name, tag.header, result, tag.image, tag.color_order, self._palette_lut,
                                    self._overlay_alpha)
        except Exception as error:  # a failed publish must not end the pipeline's thread
            if rclpy.ok(context=self.context):
                self._log.warn((name, "publish"), f"camera {name}: publishing failed: {error!r}")
            return
        stamp = tag.header.stamp
        latency_s = None  # an unstamped input has no end-to-end latency
        if stamp.sec or stamp.nanosec:
            latency_s = (self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9
        outputs.monitor.output(published, latency_s, result.timings.get("network"))

    # --- timers and parameters ------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        """The engine's status in every state, and each camera's while active."""
        now = time.monotonic()
        cameras = []
        if self.lifecycle_state == "active" and self.pipeline is not None:
            for outputs in self.cameras:
                status = outputs.monitor.report(
                    now,
                    dropped=self.pipeline.stats(outputs.camera.name).dropped,
                    expected_fps=self.settings.expected_fps,
                    input_timeout_s=self.settings.input_timeout_s,
                    max_drop_ratio=self.settings.max_drop_ratio,
                )
                status.hardware_id = self.get_fully_qualified_name()
                cameras.append(status)
        failed = [status.message for status in cameras if status.level == ERROR]
        array = DiagnosticArray(status=[self._engine_status(failed), *cameras])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _engine_status(self, failures: list[str]) -> DiagnosticStatus:
        """The node's engine: its lifecycle state, what runs, and ERROR while it fails on frames."""
        state = self.lifecycle_state
        values: dict[str, object] = {"lifecycle_state": state}
        engine = self.engine
        if self.building:
            level, message = OK, f"configuring: {self.building}"
        elif engine is None:
            level = ERROR if self.failure else WARN
            message = f"{state}: configure failed: {self.failure}" if self.failure else f"{state}: no engine"
        else:
            height, width = engine.network_size
            values.update({
                "backend": engine.backend_name,
                "precision": engine.precision,
                "device": engine.device,
                "model": engine.info.describe(),
                "weights": str(self.weights_path),
                "input_resolution": f"{width}x{height}",
                "output_resolution": self.settings.engine.output_resolution,
                "cameras": ", ".join(outputs.camera.name for outputs in self.cameras),
            })
            level = ERROR if failures else OK
            message = "; ".join(failures) if failures else engine.describe()
            message = message if state == "active" else f"{state}: {message}"
        return DiagnosticStatus(
            level=level,
            name=status_name(self.get_fully_qualified_name(), "engine"),
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=key_values(values),
        )

    def _publish_classes(self) -> None:
        if self.engine is None or self._classes is None:
            return
        info = self.engine.info
        classes = [
            {"id": c.id, "name": c.name, "color": self._palette_lut[c.id].tolist()} for c in info.classes
        ]
        document = {"model": info.describe(), "dataset": info.dataset, "ignore_index": info.ignore_index}
        self._classes.publish(String(data=json.dumps({**document, "classes": classes})))
        if self._label_info is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._label_info.publish(label_info.label_info_message(info.classes, header))

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Check a change (ranges and read-only rclpy checks first), then apply it: now, or at configure."""
        result = check_runtime_change(parameters, self.lifecycle_state, self.get_fully_qualified_name())
        if not result.successful:
            return result
        for parameter in parameters:
            self._problems.pop(parameter.name, None)  # a value refused at start, now replaced
            if parameter.name == "overlay_alpha":
                self._overlay_alpha = float(parameter.value)
            elif parameter.name == "palette" and self.engine is not None:  # else configure reads it
                colors = list(parameter.value or []) or np.asarray(self.engine.info.palette).ravel()
                self._palette_lut = palette_lut(colors)
                self._publish_classes()
        return result
