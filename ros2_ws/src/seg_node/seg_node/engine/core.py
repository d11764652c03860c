"""SegmentationEngine: a backend chosen from an EngineConfig, and synchronous inference with it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..weights import WeightsInfo, find_weights, load_weights
from .backends.base import Backend
from .errors import BackendUnavailableError, EngineError
from .options import EngineConfig
from .result import SegResult

log = logging.getLogger(__name__)


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _torch2trt_missing() -> str | None:
    """None when torch2trt can run here, else why not."""
    from .backends.torch2trt_backend import import_torch2trt

    try:
        import_torch2trt()
    except BackendUnavailableError as error:
        return str(error)
    return None


def choose_backend(config: EngineConfig) -> tuple[str, str, str]:
    """(backend, device, precision) for ``config``, resolving every "auto"; logs the choice and why."""
    cuda = torch.cuda.is_available()
    device = config.device
    if device == "cuda" and not cuda:
        raise BackendUnavailableError("device cuda asked for, but this torch has no usable CUDA "
                                      "(install a CUDA build of torch, check the driver)")
    backend = config.backend
    reason = "as configured"
    if backend == "auto":
        use_cuda = device == "cuda" or (device == "auto" and cuda)
        if use_cuda:
            missing = _torch2trt_missing()
            backend, reason = ("torch2trt", "a CUDA GPU and torch2trt are present") if missing is None else (
                "torch", f"CUDA is present but torch2trt is not ({missing})")
        elif _onnxruntime_available():
            backend, reason = "onnxruntime", "no CUDA GPU; ONNX Runtime is the fastest CPU backend"
        else:
            backend, reason = "torch", "no CUDA GPU and no onnxruntime (pip install onnxruntime for faster CPU)"
    if backend == "torch2trt":
        if device == "cpu":
            raise EngineError("the torch2trt backend runs on CUDA only; use device cuda or auto")
        missing = _torch2trt_missing()
        if missing is not None:
            raise BackendUnavailableError(missing)
    if device == "auto":
        device = "cuda" if cuda and backend in ("torch2trt", "torch") else "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device == "cuda" and backend != "onnxruntime" else "fp32"
    log.info("engine backend %s on %s at %s: %s", backend, device, precision, reason)
    return backend, device, precision


class SegmentationEngine:
    """uint8 frames in, uint8 label maps out, on the backend an EngineConfig picks."""

    def __init__(self, backend: Backend, info: WeightsInfo, config: EngineConfig) -> None:
        self.backend = backend
        self.info = info
        self.config = config
        self._lock = threading.Lock()
        self._input_slot = backend.new_input_slot()
        self._output_slot = backend.new_output_slot()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def network_size(self) -> tuple[int, int]:
        return self.backend.network_size

    def describe(self) -> str:
        return f"{self.info.describe()}: {self.backend.describe()}"

    def infer(self, frame: np.ndarray, color_order: str = "rgb", tag: Any = None, stream: str = "default"
              ) -> SegResult:
        """Segment one frame now; raises FrameError for a frame the engine cannot take."""
        with self._lock:
            start = time.perf_counter()
            self.backend.prepare(self._input_slot, frame, color_order)
            prepared = time.perf_counter()
            self.backend.execute(self._input_slot, self._output_slot)
            executed = time.perf_counter()
            maps = self.backend.collect(self._output_slot)
            done = time.perf_counter()
        network = maps.network_seconds if maps.network_seconds is not None else executed - prepared
        timings = {"prepare": prepared - start, "network": network, "collect": done - executed, "total": done - start}
        return SegResult(maps.labels, maps.confidence, tag, stream, timings)

    def close(self) -> None:
        with self._lock:
            self.backend.close()
            self._input_slot = self._output_slot = None

    def __enter__(self) -> SegmentationEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def create_engine_from_model(model: nn.Module, info: WeightsInfo, config: EngineConfig) -> SegmentationEngine:
    config.validate()
    backend_name, device, precision = choose_backend(config)
    network_size = tuple(config.network_size or info.input_size)
    output_at_input = config.output_resolution == "input"
    model = model.eval()
    if backend_name == "torch2trt":
        from .backends.torch2trt_backend import Torch2TrtBackend

        backend: Backend = Torch2TrtBackend(model, info, network_size, precision, config.confidence, output_at_input,
                                            config.engine_cache_dir, config.int8_calibration_dir)
    elif backend_name == "onnxruntime":
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(model, info, network_size, device, precision, config.confidence,
                                     output_at_input, config.threads, config.engine_cache_dir)
    else:
        from .backends.torch_backend import TorchBackend

        backend = TorchBackend(model, info, network_size, device, precision, config.confidence, output_at_input,
                               config.threads, config.cuda_graphs)
    engine = SegmentationEngine(backend, info, config)
    log.info("engine ready: %s", engine.describe())
    return engine


def create_engine(weights: str | Path, config: EngineConfig) -> SegmentationEngine:
    """Load ``weights`` (a path or a shipped model's name, see seg_node.weights.find_weights) into an engine."""
    model, info = load_weights(find_weights(str(weights)))
    return create_engine_from_model(model, info, config)
