"""Every seg_node parameter, declared in one place with its description, range and whether it may change.

config/seg_node.yaml holds the same defaults for ``ros2 launch``; a test keeps the two equal.
Invalid values are rejected when the node starts (``ParameterError``, non-zero exit) and, for the
parameters that may change at run time (overlay_alpha, palette), by the set-parameters callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..errors import SegNodeError
from ..imaging import palette_lut

COMPRESSED_SUFFIX = "/compressed"


class ParameterError(SegNodeError, ValueError):
    """A parameter value the node cannot run with; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Spec:
    default: Any  # a value, or a Parameter.Type for a parameter without a default
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    dynamic: bool = False


SPECS: dict[str, Spec] = {
    "weights": Spec("", "weights .safetensors (.json beside it) or a shipped model name; empty: cgnet_camvid"),
    "backend": Spec("auto", "inference backend", ("auto", "torch2trt", "torch", "onnxruntime")),
    "precision": Spec("auto", "numeric precision of the network", ("auto", "fp32", "fp16", "int8")),
    "device": Spec("auto", "where the network runs", ("auto", "cuda", "cpu")),
    "network_height": Spec(0, "network input height in pixels; 0: the training size in the weights' JSON", (), 0, 4096),
    "network_width": Spec(0, "network input width in pixels; 0: the training size in the weights' JSON", (), 0, 4096),
    "cameras": Spec(
        ["image"],
        "input topics, one per camera; a topic ending in /compressed is a sensor_msgs/CompressedImage (JPEG/PNG)",
    ),
    "output_resolution": Spec("input", "size of label, color_mask and confidence", ("input", "network")),
    "overlay_alpha": Spec(0.5, "weight of the colour mask in the overlay", (), 0.0, 1.0, dynamic=True),
    "palette": Spec(
        Parameter.Type.INTEGER_ARRAY,
        "class colours as a flat R,G,B list (0..255), one triple per class; unset or empty: the weights' colours",
        dynamic=True,
    ),
    "publish_confidence": Spec(False, "also compute and publish ~/<camera>/confidence (max softmax x 255)"),
    "qos_reliability": Spec("best_effort", "reliability of the camera subscriptions", ("best_effort", "reliable")),
    "qos_depth": Spec(1, "history depth of the camera subscriptions", (), 1, 100),
    "diagnostics_period_s": Spec(1.0, "seconds between /diagnostics messages", (), 0.1, 60.0),
    "expected_fps": Spec(10.0, "output rate per camera below which diagnostics warn; 0: no check", (), 0.0, 1000.0),
    "input_timeout_s": Spec(2.0, "seconds without a frame after which a camera is reported stale", (), 0.1, 3600.0),
    "engine_cache_dir": Spec("", "folder for built TensorRT engines; empty: ~/.cache/seg_node/engines"),
    "threads": Spec(0, "CPU threads of the torch/onnxruntime backends; 0: their default", (), 0, 256),
}


@dataclass(frozen=True)
class Camera:
    topic: str  # as given: relative names resolve in the node's namespace, and remapping applies
    resolved: str  # after namespace and remapping; a /compressed ending makes it a CompressedImage topic
    name: str  # the given topic without /compressed; outputs go to ~/<name>/...

    @property
    def compressed(self) -> bool:
        return self.resolved.endswith(COMPRESSED_SUFFIX)


@dataclass(frozen=True)
class NodeSettings:
    weights: str
    backend: str
    precision: str
    device: str
    network_size: tuple[int, int] | None
    cameras: tuple[Camera, ...]
    output_resolution: str
    overlay_alpha: float
    palette: tuple[int, ...]
    publish_confidence: bool
    qos_reliability: str
    qos_depth: int
    diagnostics_period_s: float
    expected_fps: float
    input_timeout_s: float
    engine_cache_dir: str
    threads: int


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    text = spec.description + (f" ({' | '.join(spec.choices)})" if spec.choices else "")
    result = ParameterDescriptor(name=name, description=text, read_only=not spec.dynamic)
    if isinstance(spec.default, float):
        result.floating_point_range = [FloatingPointRange(from_value=spec.minimum, to_value=spec.maximum, step=0.0)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool) and spec.minimum is not None:
        result.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return result


def cameras_from_topics(topics: list[str], resolve: Callable[[str], str]) -> tuple[Camera, ...]:
    """Cameras of the ``cameras`` parameter; ``resolve`` applies the node's namespace and remapping."""
    if not topics:
        raise ParameterError("cameras: give at least one input topic")
    cameras = []
    for topic in topics:
        topic = topic.strip()
        name = topic.removesuffix(COMPRESSED_SUFFIX).lstrip("~").strip("/")
        try:
            resolved = resolve(topic)
        except Exception as error:  # rclpy raises its own errors for invalid names
            raise ParameterError(f"cameras: {topic!r} is not a valid topic name: {error}") from error
        if not name:
            raise ParameterError(f"cameras: {topic!r} is not an image topic")
        cameras.append(Camera(topic=topic, resolved=resolved, name=name))
    names = [camera.name for camera in cameras]
    if len(set(names)) != len(names):
        raise ParameterError(f"cameras: two topics name the same camera in {topics}; each needs its own outputs")
    return tuple(cameras)


def check_palette(values: list[int] | None) -> tuple[int, ...]:
    values = list(values or [])
    if len(values) % 3:
        raise ParameterError(f"palette: {len(values)} values is not a whole number of R,G,B triples")
    try:
        palette_lut(values)
    except ValueError as error:
        raise ParameterError(f"palette: {error}") from error
    return tuple(values)


def declare_parameters(node: Node) -> NodeSettings:
    """Declare every parameter on ``node`` and return the checked values; ParameterError names a bad one."""
    values = {}
    for name, spec in SPECS.items():
        try:
            values[name] = node.declare_parameter(name, spec.default, descriptor(name, spec)).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as error:
            raise ParameterError(f"{name}: {error}") from error
        if spec.choices and values[name] not in spec.choices:
            raise ParameterError(f"{name}: {values[name]!r} is not one of {', '.join(spec.choices)}")
    height, width = values["network_height"], values["network_width"]
    if (height == 0) != (width == 0):
        raise ParameterError(f"network_height and network_width: set both or neither (got {height}x{width})")
    return NodeSettings(
        weights=values["weights"],
        backend=values["backend"],
        precision=values["precision"],
        device=values["device"],
        network_size=(height, width) if height else None,
        cameras=cameras_from_topics(list(values["cameras"]), node.resolve_topic_name),
        output_resolution=values["output_resolution"],
        overlay_alpha=values["overlay_alpha"],
        palette=check_palette(values["palette"]),
        publish_confidence=values["publish_confidence"],
        qos_reliability=values["qos_reliability"],
        qos_depth=values["qos_depth"],
        diagnostics_period_s=values["diagnostics_period_s"],
        expected_fps=values["expected_fps"],
        input_timeout_s=values["input_timeout_s"],
        engine_cache_dir=values["engine_cache_dir"],
        threads=values["threads"],
    )


def check_runtime_change(parameters: list[Parameter]) -> SetParametersResult:
    """Accept a run-time change of overlay_alpha or palette only with a valid value (ranges rclpy checks)."""
    for parameter in parameters:
        if parameter.name == "palette":
            try:
                check_palette(parameter.value)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
    return SetParametersResult(successful=True)
