"""The inference engine: uint8 camera frames in, uint8 label maps out, without ROS.

``create_engine`` picks a backend (torch2trt, torch on CUDA or CPU,
ONNX Runtime) from an ``EngineConfig``; ``SegmentationEngine.infer`` runs one
frame synchronously; ``FramePipeline`` overlaps consecutive frames and drops
stale ones.
"""

from .core import SegmentationEngine, choose_backend, create_engine, create_engine_from_model
from .errors import BackendUnavailableError, EngineConfigError, EngineError, FrameError
from .options import EngineConfig
from .pipeline import FramePipeline, PipelineStats
from .result import SegResult

__all__ = [
    "BackendUnavailableError",
    "EngineConfig",
    "EngineConfigError",
    "EngineError",
    "FrameError",
    "FramePipeline",
    "PipelineStats",
    "SegResult",
    "SegmentationEngine",
    "choose_backend",
    "create_engine",
    "create_engine_from_model",
]
