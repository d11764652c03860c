"""The inference engine: uint8 camera frames in, uint8 label maps out, without ROS.

``create_engine`` picks a backend (torch2trt, torch on CUDA or CPU,
ONNX Runtime) from an ``EngineConfig`` (``resolve.choose_backend`` decides);
``create_engine(weights, config, on_progress)`` reports what takes time
(TensorRT builds, int8 calibration, cache loads) to ``on_progress``;
``SegmentationEngine.infer`` runs one frame synchronously;
``SegmentationEngine.pipeline`` gives a ``FramePipeline`` that overlaps
consecutive frames and drops stale ones. The options themselves are named
once, in ``options``.
"""

from .engine import SegmentationEngine, create_engine, create_engine_from_model
from .errors import (
    BackendUnavailableError,
    EngineBuildError,
    EngineConfigError,
    EngineError,
    FrameError,
    UnsupportedCombinationError,
)
from .options import ENGINE_OPTIONS, EngineConfig, EngineOption
from .pipeline import FramePipeline, PipelineStats
from .resolve import Resolution, choose_backend
from .result import SegResult

__all__ = [
    "ENGINE_OPTIONS",
    "BackendUnavailableError",
    "EngineBuildError",
    "EngineConfig",
    "EngineConfigError",
    "EngineError",
    "EngineOption",
    "FrameError",
    "FramePipeline",
    "PipelineStats",
    "Resolution",
    "SegResult",
    "SegmentationEngine",
    "UnsupportedCombinationError",
    "choose_backend",
    "create_engine",
    "create_engine_from_model",
]
