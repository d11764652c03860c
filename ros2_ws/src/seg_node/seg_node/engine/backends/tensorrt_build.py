"""Building and running a TensorRT engine through torch2trt, with TensorRT's log captured and failures raised.

torch2trt makes its own ``trt.Logger`` (printing to stderr) and, for int8, its own calibrator without a
cache file. ``convert`` runs ``torch2trt.torch2trt`` with two substitutions in the torch2trt module,
for the duration of the call only (one conversion at a time): its ``trt.Logger(...)`` returns this
process's ``CapturingLogger`` (TensorRT's messages go to Python logging and are kept, so that a failed
build raises an ``EngineBuildError`` that quotes them), and its ``DatasetCalibrator`` reads and writes
the calibration table given. A build that returns no engine, or raises, becomes an ``EngineBuildError``.

``build_options`` passes what torch2trt would get wrong on TensorRT 10: int8 with FP16 enabled too (layers
that do not quantise fall back to fp16, not fp32) and the entropy calibrator 2 named explicitly, because
torch2trt picks its default with a string comparison (``trt.__version__ >= '5.1'``, false for "10.x") that
selects the legacy calibrator. ``EngineRunner`` runs the engine through its execution context instead of
torch2trt's ``TRTModule``, which ignores ``execute_async_v3``'s result and returns ``torch.empty`` outputs:
a failed run would hand on uninitialised memory as labels. ``check_agreement`` compares the new engine's
labels with the torch model's on a test input right after a build.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import EngineBuildError, EngineError

log = logging.getLogger(__name__)

# TensorRT's severities (nvinfer1::ILogger::Severity)
INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)
_LEVELS = {INTERNAL_ERROR: logging.ERROR, ERROR: logging.ERROR, WARNING: logging.WARNING, INFO: logging.DEBUG}
_SEVERITY_NAMES = {INTERNAL_ERROR: "internal error", ERROR: "error", WARNING: "warning", INFO: "info"}
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# trt.DataType member name -> torch dtype, for the engine's output tensor
TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
# least share of equal labels between a new engine and the torch model on one test frame. It catches a
# broken engine (a failed run or stale memory agrees on about 1/classes of the pixels), not the precision's
# own loss, which seg-gpu-check measures against the eager model over several frames.
AGREEMENT = {"fp32": 0.99, "fp16": 0.95, "int8": 0.8}
_CONVERT_LOCK = threading.Lock()
_LOGGERS: dict[int, Any] = {}  # id(tensorrt module) -> its CapturingLogger; alive for the process, as TensorRT wants


def capturing_logger_class(trt: Any) -> type:
    """A ``trt.ILogger`` subclass that forwards to Python logging and keeps messages while capturing."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()
            self._captured: list[str] | None = None

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level > INFO:  # VERBOSE: thousands of lines per build
                return
            log.log(_LEVELS[level], "TensorRT: %s", msg)
            with self._lock:
                if self._captured is not None and level <= WARNING:
                    self._captured.append(f"[{_SEVERITY_NAMES[level]}] {msg}")

        @contextlib.contextmanager
        def capture(self) -> Iterator[list[str]]:
            """Keep TensorRT's warnings and errors in the yielded list while the block runs."""
            messages: list[str] = []
            with self._lock:
                self._captured = messages
            try:
                yield messages
            finally:
                with self._lock:
                    self._captured = None

    return CapturingLogger


def tensorrt_logger(trt: Any) -> Any:
    """The process's CapturingLogger for the ``tensorrt`` module ``trt`` (TensorRT wants one logger, kept alive)."""
    logger = _LOGGERS.get(id(trt))
    if logger is None:
        logger = _LOGGERS[id(trt)] = capturing_logger_class(trt)()
    return logger


class _TensorRTWithLogger:
    """The ``tensorrt`` module as torch2trt's conversion sees it: ``Logger(...)`` is our logger, the rest is trt."""

    def __init__(self, trt: Any, logger: Any) -> None:
        self._trt = trt
        self._logger = logger

    def Logger(self, *_args: Any, **_kwargs: Any) -> Any:  # noqa: N802 (tensorrt's name)
        return self._logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trt, name)


@contextlib.contextmanager
def _substituted(module: Any, **values: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def torch2trt_module() -> Any:
    """The ``torch2trt.torch2trt`` module (the package's attribute of that name is the function)."""
    return importlib.import_module("torch2trt.torch2trt")


def convert(trt: Any, conversion_module: Any, network: Any, inputs: list[Any], options: dict[str, Any],
            calibration_table: Path | None = None) -> Any:
    """``conversion_module.torch2trt(network, inputs, **options)`` with TensorRT's log captured.

    ``conversion_module`` is ``torch2trt.torch2trt`` (``torch2trt_module()``). With
    ``calibration_table`` (int8), TensorRT reads the table there when it exists (no calibration) and
    otherwise writes it there after calibrating. Raises EngineBuildError with TensorRT's warnings and
    errors when the conversion raises or TensorRT returns no engine.
    """
    logger = tensorrt_logger(trt)
    substitutes: dict[str, Any] = {"trt": _TensorRTWithLogger(trt, logger)}
    partial_table = None
    if calibration_table is not None:
        cached = calibration_table.is_file()
        partial_table = None if cached else calibration_table.with_name(f".{calibration_table.name}.{os.getpid()}")
        substitutes["DatasetCalibrator"] = functools.partial(
            conversion_module.DatasetCalibrator, cache_file=str(calibration_table if cached else partial_table))
    try:
        with _CONVERT_LOCK, logger.capture() as messages, _substituted(conversion_module, **substitutes):
            try:
                module = conversion_module.torch2trt(network, inputs, **options)
            except Exception as error:  # converters raise anything: AttributeError, TypeError, RuntimeError
                raise EngineBuildError(f"torch2trt could not convert the network: {type(error).__name__}: "
                                       f"{error}", messages) from error
            if getattr(module, "engine", None) is None:
                raise EngineBuildError("TensorRT could not build the engine (the builder returned none)", messages)
        if partial_table is not None and partial_table.is_file():
            os.replace(partial_table, calibration_table)
            log.info("int8 calibration table cached at %s", calibration_table)
    finally:
        if partial_table is not None:
            partial_table.unlink(missing_ok=True)
    return module


def serialize(module: Any) -> bytes:
    """The serialised plan of a torch2trt ``TRTModule``."""
    return bytes(module.engine.serialize())


def deserialize(trt: Any, path: Path) -> Any:
    """The ICudaEngine saved at ``path``; EngineBuildError with TensorRT's log when it cannot be loaded."""
    logger = tensorrt_logger(trt)
    with logger.capture() as messages:
        engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EngineBuildError(f"TensorRT could not load {path} (made by another TensorRT or GPU?); delete it to "
                               "rebuild", messages)
    return engine


def build_options(trt: Any, precision: str, calibration_dataset: Any = None) -> dict[str, Any]:
    """torch2trt's options for a ``precision`` (fp32, fp16 or int8) engine with seg_node's tensor names.

    int8 also sets fp16_mode (TensorRT then runs the layers it does not quantise in fp16) and names
    ENTROPY_CALIBRATION_2 (torch2trt's default is the legacy calibrator on TensorRT 10, see the module).
    """
    options: dict[str, Any] = {"fp16_mode": precision in ("fp16", "int8"), "input_names": [INPUT_NAME],
                               "output_names": [OUTPUT_NAME]}
    if precision == "int8":
        options.update(int8_mode=True, int8_calib_dataset=calibration_dataset,
                       int8_calib_algorithm=trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2)
    return options


def torch_dtype(trt: Any, data_type: Any) -> torch.dtype:
    """The torch dtype of a ``trt.DataType``."""
    for name, dtype in TORCH_DTYPES.items():
        if getattr(trt.DataType, name, None) == data_type:
            return dtype
    raise EngineBuildError(f"the engine's output has TensorRT type {data_type}, which seg_node cannot read")


def cuda_stream_handle() -> int:
    return torch.cuda.current_stream().cuda_stream


class EngineRunner:
    """An ICudaEngine run through its execution context on the current CUDA stream, into one output tensor.

    The output tensor is allocated once: every run and every read of it (the argmax) are queued on the
    same stream, so the next run cannot overwrite it before it was read. Any ``False`` from TensorRT
    (setting the input shape or an address, or ``execute_async_v3``) raises EngineError, so a failed run
    never passes on stale or uninitialised memory.
    """

    def __init__(self, trt: Any, engine: Any, device: str | torch.device = "cuda",
                 stream_handle: Any = cuda_stream_handle) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineBuildError("TensorRT could not create an execution context for the engine (out of GPU "
                                   "memory?)")
        shape = tuple(engine.get_tensor_shape(OUTPUT_NAME))
        self.output = torch.empty(shape, dtype=torch_dtype(trt, engine.get_tensor_dtype(OUTPUT_NAME)), device=device)
        self._stream_handle = stream_handle

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Queue the engine on ``image`` (contiguous NCHW on the device); the output tensor, filled in order."""
        context = self.context
        if not (context.set_input_shape(INPUT_NAME, tuple(image.shape))
                and context.set_tensor_address(INPUT_NAME, image.data_ptr())
                and context.set_tensor_address(OUTPUT_NAME, self.output.data_ptr())):
            raise EngineError(f"TensorRT refused the input {tuple(image.shape)} or a buffer address for the engine "
                              "(its log, logger seg_node.engine.backends.tensorrt_build, says why)")
        if not context.execute_async_v3(self._stream_handle()):
            raise EngineError("TensorRT could not run the engine (execute_async_v3 returned False); its log "
                              "(logger seg_node.engine.backends.tensorrt_build) says why")
        return self.output


def check_agreement(engine_logits: torch.Tensor, torch_logits: torch.Tensor, precision: str) -> float:
    """Share of equal argmax labels; EngineBuildError when below ``AGREEMENT[precision]``."""
    share = float((engine_logits.argmax(1) == torch_logits.argmax(1)).float().mean())
    if share < AGREEMENT[precision]:
        raise EngineBuildError(f"the new TensorRT {precision} engine gives the torch model's labels on only "
                               f"{100 * share:.2f}% of a test input's pixels (need {100 * AGREEMENT[precision]:g}%)"
                               "; it is not used")
    return share
