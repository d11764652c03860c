"""From an EngineConfig to a concrete (backend, device, precision): every "auto" resolved, every combination checked.

``choose_backend`` is the one place that decides what runs. It raises, before
anything is loaded or built:

* ``EngineConfigError`` for a value its option does not allow (or a missing
  one, such as int8 without ``int8_calibration_dir``),
* ``BackendUnavailableError`` when a library or device is missing here
  (CUDA, TensorRT/torch2trt),
* ``UnsupportedCombinationError`` for values that do not go together
  (torch2trt on cpu, fp16 on a CPU backend, int8 outside torch2trt,
  cuda_graphs without CUDA),

each with a message that says what to change; and it logs what it chose and why.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from .calibration import parse_calibration_source
from .errors import BackendUnavailableError, EngineConfigError, UnsupportedCombinationError
from .options import EngineConfig

log = logging.getLogger(__name__)


class Resolution(NamedTuple):
    """What runs: no "auto" left. A tuple, so ``backend, device, precision = choose_backend(config)`` works."""

    backend: str
    device: str
    precision: str


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def torch2trt_missing() -> str | None:
    """None when torch2trt can run here, else why not."""
    from .backends.torch2trt_backend import import_torch2trt

    try:
        import_torch2trt()
    except BackendUnavailableError as error:
        return str(error)
    return None


def _auto_backend(config: EngineConfig, cuda: bool) -> tuple[str, str]:
    """(backend, why) for backend auto."""
    if config.device == "cuda" or (config.device == "auto" and cuda):
        missing = torch2trt_missing()
        if missing is None:
            return "torch2trt", "a CUDA GPU and torch2trt are present"
        return "torch", f"CUDA is present but torch2trt is not ({missing})"
    if onnxruntime_available():
        return "onnxruntime", "no CUDA GPU; ONNX Runtime is the fastest CPU backend"
    return "torch", "no CUDA GPU and no onnxruntime (pip install onnxruntime for faster CPU)"


def check_combination(config: EngineConfig, choice: Resolution, why: str = "") -> None:
    """Raise UnsupportedCombinationError (or EngineConfigError) when ``choice`` cannot run ``config``."""
    backend, device, precision = choice
    chosen = f" (backend auto chose {backend}: {why})" if config.backend == "auto" and why else ""
    if backend == "torch2trt" and device == "cpu":
        raise UnsupportedCombinationError("the torch2trt backend runs on CUDA only; use device cuda or auto, "
                                          "or backend onnxruntime or torch on cpu")
    if precision == "int8":
        if backend != "torch2trt":
            raise UnsupportedCombinationError(
                f"precision int8 runs only on the torch2trt backend (TensorRT calibration), not on {backend}{chosen}; "
                "use backend torch2trt on a CUDA GPU, or precision fp16 / fp32")
        if not config.int8_calibration_dir:
            raise EngineConfigError("precision int8 needs int8_calibration_dir: a folder of images, or a rosbag2 "
                                    "recording as PATH:TOPIC, of frames like the ones the engine will see")
        parse_calibration_source(config.int8_calibration_dir)  # EngineConfigError before anything is built
    if precision == "fp16" and device == "cpu":
        if backend == "onnxruntime":
            raise UnsupportedCombinationError(
                f"the onnxruntime backend runs fp16 only through its TensorRT execution provider on CUDA{chosen}; "
                "use precision fp32 (or auto) on CPU, or device cuda with onnxruntime-gpu")
        raise UnsupportedCombinationError(
            f"fp16 on CPU is slower than fp32 in PyTorch{chosen}; use precision fp32 (or auto) on CPU")
    if config.cuda_graphs:
        if backend == "torch" and device != "cuda":
            raise UnsupportedCombinationError(f"cuda_graphs needs device cuda{chosen}; turn cuda_graphs off on CPU")
        if backend != "torch":
            log.warning("cuda_graphs applies to the torch backend on CUDA only; ignored for %s", backend)


def choose_backend(config: EngineConfig) -> Resolution:
    """(backend, device, precision) for ``config``, resolving every "auto"; logs the choice and why.

    Raises EngineConfigError, BackendUnavailableError or UnsupportedCombinationError (all EngineError).
    """
    config.validate()
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise BackendUnavailableError("device cuda asked for, but this torch has no usable CUDA "
                                      "(install a CUDA build of torch, check the driver), or use device cpu or auto")
    backend, why = (config.backend, "as configured") if config.backend != "auto" else _auto_backend(config, cuda)
    if backend == "torch2trt" and config.device != "cpu":
        missing = torch2trt_missing()
        if missing is not None:
            raise BackendUnavailableError(missing)
    device = config.device
    if device == "auto":
        device = "cuda" if cuda and backend != "onnxruntime" else "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device == "cuda" and backend != "onnxruntime" else "fp32"
    choice = Resolution(backend, device, precision)
    check_combination(config, choice, why)
    log.info("engine backend %s on %s at %s: %s", backend, device, precision, why)
    return choice
