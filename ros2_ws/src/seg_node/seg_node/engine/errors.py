"""Exceptions of the inference engine: one type per kind of failure, all of them EngineError.

``EngineConfigError``: a value its option does not allow; ``BackendUnavailableError``: a library or
device missing here; ``UnsupportedCombinationError``: values that do not go together; ``FrameError``:
a frame the engine cannot take; ``EngineBuildError``: TensorRT (or torch2trt) failed to build an engine.
"""

from __future__ import annotations

from ..errors import SegNodeError


class EngineError(SegNodeError, RuntimeError):
    """The engine cannot be built or cannot run as configured."""


class EngineConfigError(EngineError):
    """An EngineConfig value outside what its option allows; the message names the field and the choices."""


class BackendUnavailableError(EngineError):
    """A backend whose library (or device) is missing here; the message names what to install."""


class FrameError(EngineError):
    """A frame the engine cannot take: wrong dtype, shape or size."""


class UnsupportedCombinationError(EngineError):
    """Options that are each valid but do not work together (torch2trt on cpu, int8 on torch, ...)."""


class EngineBuildError(EngineError):
    """TensorRT or torch2trt could not build (or load) an engine; ``tensorrt_log`` holds TensorRT's messages.

    With backend auto the engine falls back to the torch backend on CUDA and logs a warning.
    """

    def __init__(self, message: str, tensorrt_log: list[str] | None = None) -> None:
        self.tensorrt_log = list(tensorrt_log or [])
        if self.tensorrt_log:
            message += "\nTensorRT said:\n  " + "\n  ".join(self.tensorrt_log[-20:])
        super().__init__(message)
