"""torch2trt backend: the network as a TensorRT engine, pre/post-processing in torch on the same GPU.

The engine is built once per key (weights hash, input shape, precision, GPU
name, TensorRT and torch2trt versions) and cached on disk as TensorRT's own
serialised plan, so the second start loads it in seconds. int8 is calibrated
on a folder of frames, pre-processed exactly as at run time.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...weights import WeightsInfo
from ..cache import EngineCache, state_hash
from ..errors import BackendUnavailableError, EngineConfigError, EngineError
from .torch_backend import TorchBackend, fold_batchnorm

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
CALIBRATION_FRAMES = 64


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


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # a source checkout on PYTHONPATH, as some Jetson set-ups have
        return "unknown"


class Torch2TrtBackend(TorchBackend):
    name = "torch2trt"

    def __init__(self, model: nn.Module, info: WeightsInfo, network_size: tuple[int, int], precision: str,
                 confidence: bool, output_at_input: bool, cache_dir: str | None,
                 int8_calibration_dir: str | None) -> None:
        if precision == "int8" and not int8_calibration_dir:
            raise EngineConfigError("int8 needs int8_calibration_dir: a folder of frames like the ones it will see")
        self._tensorrt, self._torch2trt = import_torch2trt()
        self._info = info
        self._cache_dir = cache_dir
        self._trt_precision = precision
        self._calibration_dir = int8_calibration_dir
        # The torch half of the work (pre/post-processing) runs in fp32; TensorRT picks its own precision.
        super().__init__(model, info, network_size, "cuda", "fp32", confidence, output_at_input)
        self.precision = precision

    def build_network(self, model: nn.Module) -> nn.Module:
        trt, torch2trt = self._tensorrt, self._torch2trt
        height, width = self.network_size
        key = {
            "kind": "tensorrt-engine",
            "architecture": self._info.architecture,
            "weights_sha256": state_hash(model),
            "input_shape": [1, 3, height, width],
            "precision": self._trt_precision,
            "gpu": torch.cuda.get_device_name(),
            "tensorrt": trt.__version__,
            "torch2trt": package_version("torch2trt"),
            "calibration_dir": str(Path(self._calibration_dir).resolve()) if self._calibration_dir else None,
        }
        network = fold_batchnorm(model).cuda()
        path = EngineCache(self._cache_dir).get_or_build(
            key, f"{self._info.architecture}_{height}x{width}_{self._trt_precision}", ".engine",
            lambda target: target.write_bytes(bytes(self._convert(network).engine.serialize())))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineError(f"TensorRT could not load {path}; delete it to rebuild")
        return torch2trt.TRTModule(engine=engine, input_names=["image"], output_names=["logits"])

    def run_network(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image.contiguous())  # TensorRT reads plain NCHW

    def _convert(self, network: nn.Module) -> nn.Module:
        height, width = self.network_size
        example = torch.zeros(1, 3, height, width, device="cuda")
        options = {"fp16_mode": self._trt_precision == "fp16", "input_names": ["image"], "output_names": ["logits"]}
        if self._trt_precision == "int8":
            options.update(int8_mode=True, int8_calib_dataset=self._calibration_inputs())
        log.info("building a TensorRT %s engine at %dx%d (minutes on a Jetson)", self._trt_precision, height, width)
        with torch.no_grad():
            return self._torch2trt.torch2trt(network, [example], **options)

    def _calibration_inputs(self) -> list[list[torch.Tensor]]:
        import cv2

        files = sorted(p for p in Path(self._calibration_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise EngineError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self._calibration_dir} to calibrate int8")
        step = max(1, len(files) // CALIBRATION_FRAMES)
        inputs = []
        with torch.no_grad():
            for path in files[::step][:CALIBRATION_FRAMES]:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is None:
                    raise EngineError(f"{path} is not a readable image")
                frame = torch.from_numpy(np.ascontiguousarray(frame[:, :, ::-1])).cuda()[None]
                inputs.append([self.preprocess(frame).contiguous()])
        return inputs
