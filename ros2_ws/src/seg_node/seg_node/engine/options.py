"""The engine's options, named once: EngineConfig's fields, the node's parameters and the CLIs' flags derive from here.

Each ``EngineOption`` says its name (the EngineConfig field), default, help
text, allowed choices or range. ``EngineConfig.validate`` checks against
them, ``seg_node.ros.parameters`` declares one ROS parameter per option, and
``seg_node.cli.engine_flags`` gives a CLI the same names as ``--flags``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import EngineConfigError

BACKENDS = ("auto", "torch2trt", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
DEVICES = ("auto", "cuda", "cpu")
OUTPUT_RESOLUTIONS = ("input", "network")
COLOR_ORDERS = ("rgb", "bgr")
MIN_NETWORK_SIDE = 16
MAX_NETWORK_SIDE = 4096
MAX_THREADS = 256


@dataclass(frozen=True)
class EngineOption:
    name: str  # the EngineConfig field; the node parameter and the --flag take the same name
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None  # for counts and sizes; None: no lower bound
    maximum: int | None = None  # for counts and sizes; None: no upper bound


ENGINE_OPTIONS: tuple[EngineOption, ...] = (
    EngineOption("backend", "auto", "inference backend; auto: torch2trt on CUDA, else ONNX Runtime, else torch",
                 BACKENDS),
    EngineOption("precision", "auto", "numeric precision of the network; auto: fp16 on CUDA, fp32 on CPU", PRECISIONS),
    EngineOption("device", "auto", "where the network runs; auto: CUDA when present", DEVICES),
    EngineOption("network_size", None, "network input (height, width) in pixels; unset: the weights' training size",
                 minimum=MIN_NETWORK_SIDE, maximum=MAX_NETWORK_SIDE),
    EngineOption("output_resolution", "input",
                 "size of the label and confidence maps: the frame's (input) or the network's (network)",
                 OUTPUT_RESOLUTIONS),
    EngineOption("confidence", False, "also compute the confidence map (max softmax x 255, uint8)"),
    EngineOption("threads", None, "CPU threads of the torch and ONNX Runtime backends; unset: all cores",
                 minimum=1, maximum=MAX_THREADS),
    EngineOption("engine_cache_dir", None, "folder for built TensorRT / ONNX Runtime engines; "
                 "unset: ~/.cache/seg_node/engines"),
    EngineOption("cuda_graphs", False, "replay the network as a CUDA graph (torch backend on CUDA)"),
    EngineOption("int8_calibration_dir", None, "int8 calibration data (precision int8): a folder of images, "
                 "or a rosbag2 recording as PATH:TOPIC"),
)
OPTIONS_BY_NAME: dict[str, EngineOption] = {option.name: option for option in ENGINE_OPTIONS}


@dataclass
class EngineConfig:
    """What the engine is asked to do; every field is an ``EngineOption`` of the same name."""

    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    network_size: tuple[int, int] | None = None
    output_resolution: str = "input"
    confidence: bool = False
    threads: int | None = None
    engine_cache_dir: str | None = None
    cuda_graphs: bool = False
    int8_calibration_dir: str | None = None

    def validate(self) -> None:
        """Raise EngineConfigError naming the field and what it allows."""
        for option in ENGINE_OPTIONS:
            value = getattr(self, option.name)
            if option.choices and value not in option.choices:
                raise EngineConfigError(
                    f"EngineConfig.{option.name}={value!r}; choose one of {list(option.choices)}")
        if self.network_size is not None:
            size = tuple(self.network_size)
            if len(size) != 2 or not all(isinstance(v, int) and MIN_NETWORK_SIDE <= v <= MAX_NETWORK_SIDE
                                         for v in size):
                raise EngineConfigError(f"EngineConfig.network_size={self.network_size!r}; "
                                        f"give (height, width), each {MIN_NETWORK_SIDE}..{MAX_NETWORK_SIDE}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise EngineConfigError(f"EngineConfig.threads={self.threads}; give a count 1..{MAX_THREADS} or None")


def _check_field_names() -> None:
    # The two lists must name the same things, or a node parameter or flag would set nothing.
    config_fields = [f.name for f in fields(EngineConfig)]
    if config_fields != [option.name for option in ENGINE_OPTIONS]:
        raise AssertionError(f"EngineConfig fields {config_fields} differ from ENGINE_OPTIONS")


_check_field_names()
