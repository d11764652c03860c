"""Every seg_node parameter, declared in one place with its description, range and whether it may change.

config/seg_node.yaml holds the same defaults for ``ros2 launch``; a test keeps the two equal.
Parameters are declared when the node is created (``declare_parameters``, which keeps the problems of
values given at start instead of raising) and checked when it is configured (``read_settings``:
``ParameterError``, so the configure transition fails with the reason). The parameters that may change
at run time (overlay_alpha, palette) are checked by the set-parameters callback (``check_runtime_change``),
which takes those read at configure (weights, the engine's, the cameras, ...) only while the node is
unconfigured: a model switch without a restart is deactivate -> cleanup -> set -> configure -> activate.
autostart and diagnostics_period_s are read once, at start: read-only.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..engine.errors import EngineConfigError
from ..engine.options import ENGINE_OPTIONS, EngineConfig, EngineOption
from ..errors import SegNodeError
from ..imaging import palette_lut
from .topics import COMPRESSED_SUFFIX, camera_info_topic, camera_name

INT64_MAX = 2**63 - 1


class ParameterError(SegNodeError, ValueError):
    """A parameter value the node cannot run with; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Spec:
    default: Any  # a value, or a Parameter.Type for a parameter without a default
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    dynamic: bool = False  # may change at any time; else read at configure (or ``at_start``)
    at_start: bool = False  # read once, when the node starts: read-only


# Engine options whose parameter has another name or shape than the EngineConfig field; every other
# option is one parameter of its own name. ROS parameters cannot be optional pairs, hence two sides.
PARAMETER_NAMES = {"network_size": ("network_height", "network_width"), "confidence": ("publish_confidence",)}
NOTES = {
    "network_height": "; this parameter: the height",
    "network_width": "; this parameter: the width",
    "publish_confidence": "; published as ~/<camera>/confidence",
}


def engine_parameter_names(option: EngineOption) -> tuple[str, ...]:
    """The node parameter(s) that carry ``option``: its own name, but for network_size and confidence."""
    return PARAMETER_NAMES.get(option.name, (option.name,))


def unset_value(option: EngineOption) -> Any:
    """The parameter value that stands for an option's None: 0 for counts and sizes, "" for folders."""
    return 0 if option.minimum is not None else ""


def engine_specs() -> dict[str, Spec]:
    """One read-only parameter per EngineOption (two for network_size), with its description, choices and range."""
    specs = {}
    for option in ENGINE_OPTIONS:
        unset = unset_value(option)
        names = engine_parameter_names(option)
        for name in names:
            text = option.help + NOTES.get(name, "")
            if option.default is None:
                text += f"; {unset!r}{' (both)' if len(names) > 1 else ''}: unset"
            default = unset if option.default is None else option.default
            minimum = unset if option.minimum is not None else None
            specs[name] = Spec(default, text, option.choices, minimum, option.maximum)
    return specs


SPECS: dict[str, Spec] = {
    "autostart": Spec(
        True,
        "configure and activate right after start; false: stay unconfigured for a lifecycle manager "
        "(ros2 lifecycle set /seg_node configure)",
        at_start=True,
    ),
    "weights": Spec("", "weights .safetensors (.json beside it) or a shipped model name; empty: cgnet_camvid"),
    "cameras": Spec(
        ["image"],
        "input topics, one per camera; a topic ending in /compressed is a sensor_msgs/CompressedImage (JPEG/PNG)",
    ),
    **engine_specs(),
    "overlay_alpha": Spec(0.5, "weight of the colour mask in the overlay", (), 0.0, 1.0, dynamic=True),
    "palette": Spec(
        Parameter.Type.INTEGER_ARRAY,
        "class colours as a flat R,G,B list (0..255), one triple per class; unset or empty: the weights' colours",
        dynamic=True,
    ),
    "qos_reliability": Spec("best_effort", "reliability of the camera subscriptions", ("best_effort", "reliable")),
    "qos_depth": Spec(1, "history depth of the camera subscriptions", (), 1, 100),
    "diagnostics_period_s": Spec(1.0, "seconds between /diagnostics messages", (), 0.1, 60.0, at_start=True),
    "expected_fps": Spec(
        10.0, "output rate per camera below which diagnostics warn (by over a frame a report); 0: off", (), 0.0, 1000.0
    ),
    "input_timeout_s": Spec(2.0, "seconds without a frame after which a camera is reported stale", (), 0.1, 3600.0),
    "max_drop_ratio": Spec(
        0.5, "fraction of a camera's frames dropped in a report (newer frames replaced them while the engine was "
        "busy) above which diagnostics warn; 1: off", (), 0.0, 1.0
    ),
}


@dataclass(frozen=True)
class Camera:
    topic: str  # as given: relative names resolve in the node's namespace, and remapping applies
    resolved: str  # after namespace and remapping; a /compressed ending makes it a CompressedImage topic
    name: str  # the given topic without /compressed; outputs go to ~/<name>/...

    @property
    def compressed(self) -> bool:
        return self.resolved.endswith(COMPRESSED_SUFFIX)

    @property
    def info_topic(self) -> str:
        """Its sensor_msgs/CameraInfo input, the sibling camera_info of the given topic (remappable)."""
        return camera_info_topic(self.topic)


@dataclass(frozen=True)
class NodeSettings:
    weights: str
    cameras: tuple[Camera, ...]
    engine: EngineConfig  # from the parameters of ENGINE_OPTIONS, see engine_config_from_parameters
    overlay_alpha: float
    palette: tuple[int, ...]
    qos_reliability: str
    qos_depth: int
    diagnostics_period_s: float
    expected_fps: float
    input_timeout_s: float
    max_drop_ratio: float


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    text = spec.description + (f" ({' | '.join(spec.choices)})" if spec.choices else "")
    result = ParameterDescriptor(name=name, description=text, read_only=spec.at_start)
    if isinstance(spec.default, float):
        result.floating_point_range = [FloatingPointRange(from_value=spec.minimum, to_value=spec.maximum, step=0.0)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool) and spec.minimum is not None:
        maximum = int(spec.maximum) if spec.maximum is not None else INT64_MAX
        result.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=maximum, step=1)]
    return result


def engine_config_from_parameters(values: Mapping[str, Any]) -> EngineConfig:
    """The EngineConfig that parameter ``values`` (by parameter name) ask for, option by option, validated.

    A parameter at its unset value (0, "") gives the option's None; ParameterError names a bad value.
    """
    fields = {}
    for option in ENGINE_OPTIONS:
        names = engine_parameter_names(option)
        given = tuple(values[name] for name in names)
        unset = [value == unset_value(option) for value in given] if option.default is None else [False]
        if any(unset) and not all(unset):
            raise ParameterError(f"{' and '.join(names)}: set all or none (got {given})")
        for name, value in zip(names, given, strict=True):
            if option.minimum is not None and value != unset_value(option) and value < option.minimum:
                raise ParameterError(f"{name}: {value} is below {option.minimum}; give {unset_value(option)} (unset) "
                                     f"or {option.minimum}..{option.maximum}")
        fields[option.name] = None if all(unset) else given if len(given) > 1 else given[0]
    config = EngineConfig(**fields)
    try:
        config.validate()
    except EngineConfigError as error:
        raise ParameterError(str(error)) from error
    return config


def parameters_from_engine_config(config: EngineConfig) -> dict[str, Any]:
    """The node parameters (by name) that make the node build ``config``: the inverse of
    ``engine_config_from_parameters``, for tools that start a node to match an engine of their own."""
    values = {}
    for option in ENGINE_OPTIONS:
        value = getattr(config, option.name)
        names = engine_parameter_names(option)
        given = (unset_value(option),) * len(names) if value is None else tuple(value) if len(names) > 1 else (value,)
        values.update(zip(names, given, strict=True))
    return values


def cameras_from_topics(topics: list[str], resolve: Callable[[str], str]) -> tuple[Camera, ...]:
    """Cameras of the ``cameras`` parameter; ``resolve`` applies the node's namespace and remapping."""
    if not topics:
        raise ParameterError("cameras: give at least one input topic")
    cameras = []
    for topic in topics:
        topic = topic.strip()
        name = camera_name(topic)
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


def declare_parameters(node: Node) -> dict[str, str]:
    """Declare every parameter on ``node``; a value given at start that its declaration refuses (out of
    range, wrong type) is left at the default and returned as a problem (name -> message) for configure.
    A parameter given that the node does not have is warned about (``undeclared_parameters``)."""
    problems = {}
    for name, spec in SPECS.items():
        try:
            node.declare_parameter(name, spec.default, descriptor(name, spec))
        except (InvalidParameterValueException, InvalidParameterTypeException) as error:
            problems[name] = f"{name}: {error}"
            node.declare_parameter(name, spec.default, descriptor(name, spec), ignore_override=True)
    for warning in undeclared_parameters(node):
        node.get_logger().warn(warning)
    return problems


def read_settings(node: Node, problems: Mapping[str, str] | None = None) -> NodeSettings:
    """The checked values of the declared parameters; ParameterError names a bad one (or the ``problems``)."""
    if problems:
        raise ParameterError("; ".join(problems.values()))
    values = {name: node.get_parameter_or(name, Parameter(name, value=None)).value for name in SPECS}
    for name, spec in SPECS.items():
        if values[name] is None and not isinstance(spec.default, Parameter.Type):
            # -p "cameras:=[]": an empty list has no element type, so ROS 2 gives the parameter no value
            raise ParameterError(f"{name}: no value (ROS 2 gives an empty list [] none); "
                                 f"e.g. {name}:={format_value(spec.default)}")
        if spec.choices and values[name] not in spec.choices:
            raise ParameterError(f"{name}: {values[name]!r} is not one of {', '.join(spec.choices)}")
    return NodeSettings(
        weights=values["weights"],
        cameras=cameras_from_topics(list(values["cameras"]), node.resolve_topic_name),
        engine=engine_config_from_parameters(values),
        overlay_alpha=values["overlay_alpha"],
        palette=check_palette(values["palette"]),
        qos_reliability=values["qos_reliability"],
        qos_depth=values["qos_depth"],
        diagnostics_period_s=values["diagnostics_period_s"],
        expected_fps=values["expected_fps"],
        input_timeout_s=values["input_timeout_s"],
        max_drop_ratio=values["max_drop_ratio"],
    )


def format_value(value: Any) -> str:
    """A parameter value as it is written after ``-p name:=``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{', '.join(format_value(item) for item in value)}]"
    return repr(value) if value == "" else str(value)


def undeclared_parameters(node: Node) -> list[str]:
    """A warning for each parameter the node was given (``-p``, a params file) but does not declare: rclpy
    ignores it silently. Each names the closest parameters (network_size: network_height, network_width)."""
    # rclpy has no public accessor for the overrides a node was given (Humble to Kilted): the attribute is
    # Node's own, set in its constructor
    given = node._parameter_overrides
    warnings = []
    for name in sorted(given):
        if node.has_parameter(name) or name.startswith("qos_overrides."):  # rclpy's own, declared when used
            continue
        closest = PARAMETER_NAMES.get(name) or difflib.get_close_matches(name, SPECS, n=2, cutoff=0.6)
        hint = f"; did you mean {' and '.join(closest)}?" if closest else ""
        warnings.append(f"parameter {name} is not one of seg_node's and is ignored{hint} "
                        f"(python -m seg_node --help lists them)")
    return warnings


def parameter_help() -> str:
    """Every parameter with its type, default, choices or range and description: ``seg_node --help``."""
    lines = []
    for name, spec in SPECS.items():
        if isinstance(spec.default, Parameter.Type):
            facts = [spec.default.name.lower().replace("_", " "), "unset by default"]
        else:
            facts = [f"default {format_value(spec.default)}"]
        if spec.choices:
            facts.append(" | ".join(spec.choices))
        if spec.minimum is not None and spec.maximum is not None:
            facts.append(f"{spec.minimum}..{spec.maximum}")
        elif spec.minimum is not None:
            facts.append(f">= {spec.minimum}")
        if spec.dynamic or spec.at_start:
            facts.append("may change at run time" if spec.dynamic else "read-only: read at start")
        else:
            facts.append("read at configure: set it while unconfigured, then configure")
        lines.append(f"  {name} ({'; '.join(facts)})\n      {spec.description}")
    return "\n".join(lines)


def check_runtime_change(parameters: list[Parameter], lifecycle_state: str, node_name: str) -> SetParametersResult:
    """Accept overlay_alpha or palette at any time with a valid value (ranges rclpy checks); a parameter read at
    configure only while the node is unconfigured (cleanup -> configure -> activate applies it)."""
    cycle = [p.name for p in parameters if p.name in SPECS and not SPECS[p.name].dynamic]
    if cycle and lifecycle_state != "unconfigured":
        return SetParametersResult(successful=False, reason=(
            f"{', '.join(cycle)}: read at configure, and the node is {lifecycle_state}; apply through the lifecycle: "
            f"ros2 lifecycle set {node_name} deactivate, then cleanup; set the parameters; then configure and "
            f"activate"
        ))
    for parameter in parameters:
        spec = SPECS.get(parameter.name)
        if spec is not None and spec.choices and parameter.value not in spec.choices:
            return SetParametersResult(successful=False, reason=(
                f"{parameter.name}: {parameter.value!r} is not one of {', '.join(spec.choices)}"
            ))
        if parameter.name == "palette":
            try:
                check_palette(parameter.value)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
    return SetParametersResult(successful=True)
