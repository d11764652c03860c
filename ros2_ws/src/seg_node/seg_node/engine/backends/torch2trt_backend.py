"""torch2trt backend: the network as a TensorRT engine, pre/post-processing in torch on the same GPU.

The engine is built once per key (weights hash, input shape, precision, GPU
name, TensorRT version and torch2trt's exact commit) and cached on disk as
TensorRT's own serialised plan, so the second start loads it in seconds. int8
is calibrated on a folder of images or a rosbag2 topic (see ..calibration),
pre-processed exactly as at run time; the calibration table is cached too.
A failed build raises EngineBuildError quoting TensorRT's log (see
tensorrt_build); with backend auto the engine then falls back to torch.

The pre-processing writes straight into one persistent contiguous NCHW buffer,
the layout TensorRT reads, so no per-frame ``.contiguous()`` copy is made.

torch2trt builds the engine; it runs through ``tensorrt_build.EngineRunner`` (its execution context, one
persistent output tensor, a failed run raising EngineError), not torch2trt's TRTModule, which ignores a
failed run. Right after a build or load, the engine's labels on a test input are compared with the torch
model's on an image-like test frame (``tensorrt_build.check_agreement``): a mismatch is an
EngineBuildError, so backend auto falls back to torch with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...weights import WeightsInfo
from ..cache import EngineCache, no_progress, state_hash, torch2trt_identity
from ..calibration import (
    CalibrationDataset,
    CalibrationSource,
    calibration_table_key,
    load_calibration_frames,
    parse_calibration_source,
)
from ..errors import BackendUnavailableError, EngineBuildError, EngineConfigError
from . import tensorrt_build
from .torch_backend import TorchBackend, fold_batchnorm

log = logging.getLogger(__name__)


def import_torch2trt():  # noqa: ANN201 (the modules)
    try:
        import tensorrt
        import torch2trt
    except ImportError as error:
        raise BackendUnavailableError(
            "the torch2trt backend needs TensorRT and torch2trt: on Jetson they come with JetPack "
            "(python3-libnvinfer) plus `pip install git+https://github.com/NVIDIA-AI-IOT/torch2trt`; "
            f"missing here: {error.name}"
        ) from error
    if not torch.cuda.is_available():
        raise BackendUnavailableError("the torch2trt backend needs a CUDA GPU; torch.cuda.is_available() is False")
    return tensorrt, torch2trt


class Torch2TrtBackend(TorchBackend):
    name = "torch2trt"

    def __init__(self, model: nn.Module, info: WeightsInfo, network_size: tuple[int, int], precision: str,
                 confidence: bool, output_at_input: bool, cache_dir: str | None,
                 int8_calibration_dir: str | None, on_progress: Callable[[str], None] | None = None) -> None:
        if precision == "int8" and not int8_calibration_dir:
            raise EngineConfigError("int8 needs int8_calibration_dir: a folder of images, or a rosbag2 recording "
                                    "as PATH:TOPIC, of frames like the ones it will see")
        self._tensorrt, _ = import_torch2trt()  # torch2trt itself is imported where the engine is built
        self._info = info
        self._cache = EngineCache(cache_dir)
        self._trt_precision = precision
        self._calibration: CalibrationSource | None = (
            parse_calibration_source(int8_calibration_dir) if precision == "int8" else None)
        self._progress = on_progress or no_progress
        self.engine_path: Path | None = None
        self.calibration_table: Path | None = None
        self._input: torch.Tensor | None = None
        self.agreement: float | None = None  # share of the torch model's labels on the test input
        # The torch half of the work (pre/post-processing) runs in fp32; TensorRT picks its own precision.
        super().__init__(model, info, network_size, "cuda", "fp32", confidence, output_at_input)
        self.precision = precision

    def describe(self) -> str:
        return f"{super().describe()}, engine {self.engine_path}"

    def engine_key(self, weights_sha256: str) -> dict[str, object]:
        height, width = self.network_size
        return {
            "kind": "tensorrt-engine",
            "architecture": self._info.architecture,
            "weights_sha256": weights_sha256,
            "input_shape": [1, 3, height, width],
            "precision": self._trt_precision,
            "gpu": torch.cuda.get_device_name(),
            "tensorrt": self._tensorrt.__version__,
            "torch2trt": torch2trt_identity(),
            "calibration_data": self._calibration.identity() if self._calibration else None,
        }

    def build_network(self, model: nn.Module) -> nn.Module:
        height, width = self.network_size
        weights_sha256 = state_hash(model)
        stem = f"{self._info.architecture}_{height}x{width}_{self._trt_precision}"
        key = self.engine_key(weights_sha256)
        if self._calibration is not None:
            self.calibration_table = self._cache.path_for(
                calibration_table_key(self._calibration, self._info.architecture, weights_sha256,
                                      self.network_size, self._tensorrt.__version__), stem, ".calib")
        if not self._cache.path_for(key, stem, ".engine").is_file():
            self._progress(f"building TensorRT {self._trt_precision} engine at {height}x{width} "
                           "(this can take minutes)")
        network = fold_batchnorm(model).cuda()
        self.engine_path = self._cache.get_or_build(
            key, stem, ".engine", lambda target: target.write_bytes(self._build_plan(network)),
            self._progress, "TensorRT engine")
        runner = tensorrt_build.EngineRunner(self._tensorrt, tensorrt_build.deserialize(self._tensorrt,
                                                                                         self.engine_path))
        self._input = torch.empty(1, 3, height, width, device="cuda")  # contiguous NCHW, what TensorRT reads
        self.agreement = self.compare_with_torch(runner, network)
        return runner

    def compare_with_torch(self, runner: tensorrt_build.EngineRunner, network: nn.Module) -> float:
        """The engine's labels against the fp32 torch ``network``'s on one image-like test frame (smooth random
        colours, pre-processed as at run time); EngineBuildError, naming the engine file, below
        ``tensorrt_build.AGREEMENT``."""
        height, width = self.network_size
        generator = torch.Generator().manual_seed(0)
        coarse = 255.0 * torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=generator)
        frame = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        frame = frame.round().to(torch.uint8).permute(0, 2, 3, 1).to(self._input.device)  # 1 x H x W x 3
        with torch.inference_mode():
            self.preprocess(frame, None, out=self._input)
            reference = network(self._input)
            try:
                return tensorrt_build.check_agreement(runner(self._input), reference, self._trt_precision)
            except EngineBuildError as error:
                raise EngineBuildError(f"{error} (engine {self.engine_path})") from error

    def preprocess_frame(self, frame: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
        # Written into the persistent NCHW buffer: every write and the network's read of it are on the compute
        # stream under the engine's execute lock, so one buffer serves every slot.
        return self.preprocess(frame, order, out=self._input)

    def run_network(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)  # EngineRunner on the compute stream; ``image`` is the NCHW buffer

    def _build_plan(self, network: nn.Module) -> bytes:
        height, width = self.network_size
        example = torch.zeros(1, 3, height, width, device="cuda")
        dataset = self._calibration_dataset() if self._calibration is not None else None
        options = tensorrt_build.build_options(self._tensorrt, self._trt_precision, dataset)
        log.info("building a TensorRT %s engine at %dx%d (minutes on a Jetson)", self._trt_precision, height, width)
        with torch.no_grad():
            module = tensorrt_build.convert(self._tensorrt, tensorrt_build.torch2trt_module(), network, [example],
                                            options, self.calibration_table)
        return tensorrt_build.serialize(module)

    def _calibration_dataset(self) -> CalibrationDataset:
        if self.calibration_table is not None and self.calibration_table.is_file():
            # TensorRT reads the scales from the table and asks for no batch; torch2trt looks at item 0 only.
            self._progress(f"int8 calibration table cached at {self.calibration_table}: no recalibration")
            frames = [np.zeros((*self.network_size, 3), np.uint8)]
        else:
            self._progress(f"reading int8 calibration frames from {self._calibration.describe()}")
            frames = load_calibration_frames(self._calibration)
        return CalibrationDataset(frames, self.preprocess, self.network_size, "cuda", self._progress)
