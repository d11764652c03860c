"""Building a TensorRT engine through torch2trt with TensorRT's log captured and failures as EngineBuildError.

torch2trt makes its own ``trt.Logger`` (printing to stderr) and, for int8, its own calibrator without a
cache file. ``convert`` runs ``torch2trt.torch2trt`` with two substitutions in the torch2trt module,
for the duration of the call only (one conversion at a time): its ``trt.Logger(...)`` returns this
process's ``CapturingLogger`` (TensorRT's messages go to Python logging and are kept, so that a failed
build raises an ``EngineBuildError`` that quotes them), and its ``DatasetCalibrator`` reads and writes
the calibration table given. A build that returns no engine, or raises, becomes an ``EngineBuildError``.
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

from ..errors import EngineBuildError

log = logging.getLogger(__name__)

# TensorRT's severities (nvinfer1::ILogger::Severity)
INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)
_LEVELS = {INTERNAL_ERROR: logging.ERROR, ERROR: logging.ERROR, WARNING: logging.WARNING, INFO: logging.DEBUG}
_SEVERITY_NAMES = {INTERNAL_ERROR: "internal error", ERROR: "error", WARNING: "warning", INFO: "info"}
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
