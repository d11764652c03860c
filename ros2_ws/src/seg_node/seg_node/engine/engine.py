"""SegmentationEngine: owns a backend chosen from an EngineConfig; runs frames synchronously or through a pipeline.

``infer`` segments one frame now; ``pipeline`` returns a ``FramePipeline``
that overlaps the stages of consecutive frames. Both go through the engine's
stage methods (``new_slots``, ``prepare``, ``execute``, ``collect``), which
is where the engine keeps them apart: ``execute`` runs one network at a time
(the torch backend's CUDA graph replays from shared static buffers, and all
frames share the compute stream), and ``infer`` has its own slots under its
own lock. So ``infer`` and a running pipeline on one engine are safe together.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..weights import WeightsInfo, find_weights, load_weights
from .backends.base import Backend, Maps
from .cache import Progress, no_progress
from .errors import EngineBuildError, EngineConfigError, EngineError
from .options import EngineConfig
from .pipeline import FramePipeline
from .resolve import Resolution, choose_backend
from .result import SegResult

log = logging.getLogger(__name__)


class SegmentationEngine:
    """uint8 frames in, uint8 label maps out, on the backend an EngineConfig picks."""

    def __init__(self, backend: Backend, info: WeightsInfo, config: EngineConfig) -> None:
        self._backend = backend
        self.info = info
        self.config = config
        self._lock = threading.Lock()  # infer()'s own slots
        self._execute_lock = threading.Lock()  # one network run at a time, whoever asks
        self._closed = False
        self._pipelines: weakref.WeakSet[FramePipeline] = weakref.WeakSet()
        self._input_slot, self._output_slot = self.new_slots()

    @property
    def backend(self) -> Backend:
        """The backend, for inspection (its name, its files); frames go through infer() or pipeline()."""
        return self._backend

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def precision(self) -> str:
        return self._backend.precision

    @property
    def network_size(self) -> tuple[int, int]:
        return self._backend.network_size

    def describe(self) -> str:
        return f"{self.info.describe()}: {self._backend.describe()}"

    # ---- the two ways to run frames

    def infer(self, frame: np.ndarray, color_order: str = "rgb", tag: Any = None, stream: str = "default",
              confidence: bool | None = None) -> SegResult:
        """Segment one frame now; raises FrameError for a frame the engine cannot take.

        ``confidence``: compute this frame's confidence map (see ``wants_confidence``); None: as configured.
        """
        confidence = self.wants_confidence(confidence)
        with self._lock:
            self._check_open()
            start = time.perf_counter()
            self.prepare(self._input_slot, frame, color_order)
            prepared = time.perf_counter()
            self.execute(self._input_slot, self._output_slot, confidence)
            executed = time.perf_counter()
            maps = self.collect(self._output_slot)
            done = time.perf_counter()
        network = maps.network_seconds if maps.network_seconds is not None else executed - prepared
        timings = {"prepare": prepared - start, "network": network, "collect": done - executed, "total": done - start}
        return SegResult(maps.labels, maps.confidence, tag, stream, timings)

    def pipeline(self, on_result: Callable[[SegResult], None] | None = None) -> FramePipeline:
        """A new FramePipeline on this engine (see seg_node.engine.pipeline); close it, or close the engine."""
        return FramePipeline(self, on_result)

    def wants_confidence(self, confidence: bool | None) -> bool:
        """Whether a frame asked with ``confidence`` gets a confidence map: None means ``config.confidence``.

        False on an engine built with confidence skips the max softmax where the backend can (torch and
        torch2trt; a CUDA graph and ONNX Runtime compute it, but do not hand it on); ``SegResult.confidence``
        is None then. True on an engine built without it raises EngineConfigError: the engine's graphs were
        made without the confidence, so it would have to be rebuilt with ``EngineConfig.confidence``.
        """
        if confidence is None:
            return self.config.confidence
        if confidence and not self.config.confidence:
            raise EngineConfigError("confidence=True for a frame, but this engine was built without confidence; "
                                    "create it with EngineConfig(confidence=True) (node: publish_confidence)")
        return bool(confidence)

    # ---- stages, for FramePipeline (and infer): slots belong to their caller, the backend to the engine

    def new_slots(self) -> tuple[Any, Any]:
        """A fresh (input slot, output slot) pair for prepare -> execute -> collect."""
        self._check_open()
        return self._backend.new_input_slot(), self._backend.new_output_slot()

    def register(self, pipeline: FramePipeline) -> None:
        """Called by FramePipeline: the engine closes its pipelines before it frees the backend."""
        self._check_open()
        self._pipelines.add(pipeline)

    def prepare(self, slot: Any, frame: np.ndarray, color_order: str) -> None:
        """Validate ``frame`` (FrameError) and bring it, pre-processed, into the input ``slot``."""
        self._check_open()
        self._backend.prepare(slot, frame, color_order)

    def execute(self, source: Any, target: Any, confidence: bool | None = None) -> None:
        """Network + argmax from input slot ``source`` into output slot ``target``; one caller at a time.

        ``confidence``: as for ``infer`` (checked by ``wants_confidence``).
        """
        confidence = self.wants_confidence(confidence)
        with self._execute_lock:
            self._check_open()
            self._backend.execute(source, target, confidence)

    def collect(self, slot: Any) -> Maps:
        """Wait for the output ``slot``'s maps and return them as host arrays."""
        self._check_open()
        return self._backend.collect(slot)

    def synchronize(self) -> None:
        """Wait for device work in flight (a no-op on CPU)."""
        if not self._closed:
            self._backend.synchronize()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the SegmentationEngine is closed")

    # ---- life cycle

    def close(self) -> None:
        """Close the engine's pipelines, then free the backend; safe to call twice."""
        for pipeline in list(self._pipelines):
            pipeline.close()
        with self._lock, self._execute_lock:
            if self._closed:
                return
            self._closed = True
            self._backend.close()
            self._input_slot = self._output_slot = None

    def __enter__(self) -> SegmentationEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _build_backend(model: nn.Module, info: WeightsInfo, config: EngineConfig, choice: Resolution,
                   network_size: tuple[int, int], progress: Progress) -> Backend:
    backend_name, device, precision = choice
    output_at_input = config.output_resolution == "input"
    if backend_name == "torch2trt":
        from .backends.torch2trt_backend import Torch2TrtBackend

        return Torch2TrtBackend(model, info, network_size, precision, config.confidence, output_at_input,
                                config.engine_cache_dir, config.int8_calibration_dir, on_progress=progress)
    if backend_name == "onnxruntime":
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, info, network_size, device, precision, config.confidence,
                                  output_at_input, config.threads, config.engine_cache_dir, on_progress=progress)
    from .backends.torch_backend import TorchBackend

    if device == "cuda" and config.cuda_graphs:
        progress("capturing the network as a CUDA graph")
    return TorchBackend(model, info, network_size, device, precision, config.confidence, output_at_input,
                        config.threads, config.cuda_graphs)


def fallback_resolution(choice: Resolution) -> Resolution:
    """What backend auto runs when the TensorRT build of ``choice`` fails: torch on the same device.

    int8 runs only in TensorRT, so it becomes fp16.
    """
    return Resolution("torch", choice.device, "fp16" if choice.precision == "int8" else choice.precision)


def create_engine_from_model(model: nn.Module, info: WeightsInfo, config: EngineConfig,
                             on_progress: Progress | None = None) -> SegmentationEngine:
    """An engine running ``model`` (described by ``info``) as ``config`` asks; raises EngineError subclasses.

    ``on_progress`` (optional) is called with short messages while the engine is made: "building TensorRT
    fp16 engine at 512x1024 (this can take minutes)", "calibrating int8: 12/64", "TensorRT engine cached
    at ...", "loading cached TensorRT engine ...", and the fallback when a TensorRT build fails.
    With backend auto, a failed TensorRT build (EngineBuildError) falls back to the torch backend on CUDA
    with a logged warning; with backend torch2trt asked for explicitly, the error is raised.
    """
    progress = on_progress or no_progress
    choice = choose_backend(config)
    network_size = tuple(config.network_size or info.input_size)
    model = model.eval()
    try:
        backend = _build_backend(model, info, config, choice, network_size, progress)
    except EngineBuildError as error:
        if config.backend != "auto" or choice.backend != "torch2trt":
            raise
        fallback = fallback_resolution(choice)
        reason = str(error).splitlines()[0]
        log.warning("TensorRT engine build failed (%s); backend auto falls back to %s on %s at %s. TensorRT's "
                    "log:\n%s", reason, *fallback, "\n".join(error.tensorrt_log) or "(empty)")
        progress(f"TensorRT build failed ({reason}); falling back to {fallback.backend} on {fallback.device} "
                 f"at {fallback.precision}")
        backend = _build_backend(model, info, config, fallback, network_size, progress)
    engine = SegmentationEngine(backend, info, config)
    log.info("engine ready: %s", engine.describe())
    return engine


def create_engine(weights: str | Path, config: EngineConfig,
                  on_progress: Progress | None = None) -> SegmentationEngine:
    """Load ``weights`` (a path or a shipped model's name, see seg_node.weights.find_weights) into an engine.

    ``on_progress``: as for ``create_engine_from_model``.
    """
    model, info = load_weights(find_weights(str(weights)))
    return create_engine_from_model(model, info, config, on_progress)
