"""ONNX Runtime backend: one graph from uint8 frame to uint8 maps.

The exported graph contains the channel order, normalisation, resize,
network, argmax (and max softmax) and, on GPU providers, the nearest resize
back, so only uint8 crosses the session boundary in either direction. On the
CPU the resize back runs on the host after the session (``resize_maps_on_host``:
the same pixels, ~0.3 ms at 1920x1080 against ~5 ms in ONNX Runtime's Resize). The export is cached on
disk, keyed like the TensorRT engines. With the TensorRT execution provider
(onnxruntime-gpu), its engines and timing cache go to a folder of the engine
cache named after the graph and precision, and its optimisation profile
covers frames from 2x2 up to 4096x4096 with the network size as the optimum
(``tensorrt_provider_options``), so it builds once, not at every start or new
frame size.

A per-frame ``confidence=False`` on an engine built with confidence skips less
here than in the torch backends: labels and confidence are the two channels of
the graph's one output, so the graph still computes the max softmax, and with
a GPU execution provider ``session.run`` still copies both uint8 channels to
the host. Only the label channel is handed on (``Maps.confidence`` None).
Skipping the softmax would take a second graph (a second export and, with the
TensorRT provider, a second engine build) or control flow in the graph, and
ONNX Runtime runs every node of a graph whatever outputs are fetched.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...models.export import ONNX_OPSET, legacy_exporter_options
from ...weights import WeightsInfo
from ..cache import EngineCache, no_progress, state_hash
from ..errors import BackendUnavailableError, UnsupportedCombinationError
from ..graph import GRAPH_VERSION, EndToEnd, channel_order, check_frame, resize_maps_on_host
from ..options import MAX_NETWORK_SIDE
from .base import Backend, Maps

log = logging.getLogger(__name__)

FRAME_INPUT = "frame"
ORDER_INPUT = "channel_order"
MAPS_OUTPUT = "maps"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
MIN_FRAME_SIDE = 2  # graph.check_frame's smallest frame
MAX_FRAME_SIDE = MAX_NETWORK_SIDE


def import_onnxruntime():  # noqa: ANN201 (the module)
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(
            "the onnxruntime backend needs the onnxruntime package: pip install onnxruntime "
            "(onnxruntime-gpu for CUDA/TensorRT execution providers)"
        ) from error
    return onnxruntime


def export_end_to_end(graph: EndToEnd, path: Path, network_size: tuple[int, int]) -> None:
    """Export ``graph`` with a uint8 1 x H x W x 3 input whose H and W are free."""
    height, width = network_size
    # A dummy frame of another size than the network's, so the traced graph keeps both resizes.
    dummy = torch.zeros(1, height + 2, width + 2, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            graph,
            (dummy, torch.tensor([0, 1, 2])),
            str(path),
            input_names=[FRAME_INPUT, ORDER_INPUT],
            output_names=[MAPS_OUTPUT],
            opset_version=ONNX_OPSET,
            dynamic_axes={FRAME_INPUT: {1: "height", 2: "width"}, MAPS_OUTPUT: {2: "out_height", 3: "out_width"}},
            **legacy_exporter_options(),
        )


def tensorrt_provider_options(cache_folder: Path, precision: str, network_size: tuple[int, int]) -> dict[str, Any]:
    """Options of ONNX Runtime's TensorRT execution provider for the end-to-end graph.

    Engines and the timing cache persist in ``cache_folder`` (ONNX Runtime does not notice changed
    settings in its cache, so the caller gives each graph and precision its own folder); the one
    profile spans every frame size the engine takes, optimal at the network size.
    """
    height, width = network_size
    return {
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_folder),
        "trt_profile_min_shapes": f"{FRAME_INPUT}:1x{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}x3",
        "trt_profile_opt_shapes": f"{FRAME_INPUT}:1x{height}x{width}x3",
        "trt_profile_max_shapes": f"{FRAME_INPUT}:1x{MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}x3",
    }


@dataclass
class OrtInput:
    frame: np.ndarray | None = None
    order: np.ndarray | None = None
    size: tuple[int, int] | None = None  # the size the maps are resized to on the host (None: as they come)


@dataclass
class OrtOutput:
    maps: np.ndarray | None = None
    size: tuple[int, int] | None = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: nn.Module, info: WeightsInfo, network_size: tuple[int, int], device: str,
                 precision: str, confidence: bool, output_at_input: bool, threads: int | None,
                 cache_dir: str | None, on_progress: Callable[[str], None] | None = None) -> None:
        progress = on_progress or no_progress
        ort = import_onnxruntime()
        available = ort.get_available_providers()
        if device == "cuda":
            providers = [p for p in (TENSORRT_PROVIDER, "CUDAExecutionProvider") if p in available]
            if not providers:
                raise BackendUnavailableError(
                    f"onnxruntime here has only {available}; for device cuda install onnxruntime-gpu")
        else:
            providers = []
        if precision == "int8" or (precision == "fp16" and TENSORRT_PROVIDER not in providers):
            raise UnsupportedCombinationError(f"the onnxruntime backend runs {precision} only through its TensorRT "
                                              "execution provider; use fp32, or the torch2trt backend")
        self.device = device
        self.precision = precision
        self.network_size = tuple(network_size)
        self.resize_on_host = output_at_input and not providers  # CPU only: a GPU resizes faster than a download
        output_at_input = output_at_input and not self.resize_on_host
        key = {
            "kind": "onnx-end-to-end",
            "graph_version": GRAPH_VERSION,
            "architecture": info.architecture,
            "weights_sha256": state_hash(model),
            "network_size": list(self.network_size),
            "mean": list(info.mean),
            "std": list(info.std),
            "confidence": confidence,
            "output_at_input": output_at_input,
            "opset": ONNX_OPSET,
            "torch": torch.__version__,
        }
        graph = EndToEnd(model, info, self.network_size, confidence, output_at_input).eval()
        cache = EngineCache(cache_dir)

        def export(path: Path) -> None:
            progress("exporting the ONNX graph")
            export_end_to_end(graph, path, self.network_size)

        self.onnx_path = cache.get_or_build(key, f"{info.architecture}_{network_size[0]}x{network_size[1]}", ".onnx",
                                            export, progress, "ONNX graph")
        self.tensorrt_cache: Path | None = None

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # Spinning workers win a little on an idle machine and lose a lot when other processes (the rest of
        # the robot) share the cores: measured 18 ms vs 23 ms (ContextNet 360x480, 1 thread) here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_options: list[dict[str, Any]] = [{} for _ in providers]
        if TENSORRT_PROVIDER in providers:
            self.tensorrt_cache = cache.folder / f"onnxruntime-trt_{self.onnx_path.stem}_{precision}"
            self.tensorrt_cache.mkdir(parents=True, exist_ok=True)
            provider_options[providers.index(TENSORRT_PROVIDER)] = tensorrt_provider_options(
                self.tensorrt_cache, precision, self.network_size)
            fresh = not any(self.tensorrt_cache.iterdir())
            progress(f"{'building' if fresh else 'loading'} ONNX Runtime's TensorRT engine in {self.tensorrt_cache}"
                     + (" (this can take minutes)" if fresh else ""))
        self.session = ort.InferenceSession(str(self.onnx_path), options,
                                            providers=providers + ["CPUExecutionProvider"],
                                            provider_options=provider_options + [{}])
        self.providers = self.session.get_providers()

    def describe(self) -> str:
        return f"{super().describe()}, providers {self.providers}, graph {self.onnx_path}"

    def new_input_slot(self) -> OrtInput:
        return OrtInput()

    def new_output_slot(self) -> OrtOutput:
        return OrtOutput()

    def prepare(self, slot: OrtInput, frame: np.ndarray, color_order: str) -> None:
        slot.frame = np.ascontiguousarray(check_frame(frame))[None]
        slot.order = np.asarray(channel_order(color_order), dtype=np.int64)
        slot.size = frame.shape[:2] if self.resize_on_host else None

    def execute(self, source: OrtInput, target: OrtOutput, confidence: bool) -> None:
        # See the module's docstring: a graph exported with confidence computes it for every frame; a frame
        # that does not want it keeps only the label channel (a view: nothing is copied).
        maps = self.session.run([MAPS_OUTPUT], {FRAME_INPUT: source.frame, ORDER_INPUT: source.order})[0]
        target.maps = maps if confidence else maps[:, :1]
        target.size = source.size
        source.frame = None

    def collect(self, slot: OrtOutput) -> Maps:
        maps, slot.maps = resize_maps_on_host(slot.maps[0], slot.size), None
        return Maps(maps[0], maps[1] if maps.shape[0] > 1 else None)

    def synchronize(self) -> None:
        """Nothing to wait for: run() returns with the maps on the host."""

    def close(self) -> None:
        self.session = None
