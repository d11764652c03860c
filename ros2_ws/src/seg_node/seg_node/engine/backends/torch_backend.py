"""PyTorch backend on CPU and CUDA: BatchNorm folded, channels-last, pre/post-processing on the device.

On CUDA each input slot has a pinned host buffer and a device buffer; the
upload runs on an upload stream, the network on a compute stream, and the
download of the uint8 maps on a download stream, ordered by events, so the
upload of frame n+1 and the download of frame n-1 overlap the network on
frame n and neither waits behind the other. Every event is made by
``new_event``: blocking, so a thread waiting on one sleeps instead of
spinning a CPU core (which matters on a Jetson's few cores).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...weights import WeightsInfo
from ..errors import BackendUnavailableError, UnsupportedCombinationError
from ..graph import (
    BGR_ORDER,
    RGB_ORDER,
    Postprocess,
    Preprocess,
    channel_order,
    check_frame,
    resize_maps,
    resize_maps_on_host,
)
from .base import Backend, Maps

log = logging.getLogger(__name__)


def new_event(timing: bool = False) -> torch.cuda.Event:
    """A CUDA event whose ``synchronize()`` sleeps the waiting thread (cudaEventBlockingSync), not busy-spins.

    ``timing``: the event also records a time stamp, for ``elapsed_time``; the others skip that cost.
    """
    return torch.cuda.Event(enable_timing=timing, blocking=True)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair folded into the convolution."""
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).eval()
    try:
        return fuse(model)
    except Exception as error:  # fx cannot trace every model; the unfolded one is still correct
        log.warning("BatchNorm folding skipped: %s cannot be traced by torch.fx (%s)", type(model).__name__, error)
        return model


@dataclass
class CpuInput:
    image: torch.Tensor | None = None
    size: tuple[int, int] | None = None


@dataclass
class CpuOutput:
    maps: torch.Tensor | None = None  # 1 x K x h x w at network size
    size: tuple[int, int] | None = None  # the size collect resizes them to (None: as they are)


@dataclass
class CudaInput:
    uploaded: Any  # torch.cuda.Event: the frame is on the device
    consumed: Any  # torch.cuda.Event: the network has read the device buffer
    host: torch.Tensor | None = None  # pinned uint8 H x W x 3
    frame: torch.Tensor | None = None  # device uint8 H x W x 3
    order: torch.Tensor | None = None
    used: bool = False


@dataclass
class CudaOutput:
    computed: Any
    downloaded: Any
    started: Any
    finished: Any
    maps: torch.Tensor | None = None  # device uint8 1 x K x H x W
    host: torch.Tensor | None = None  # pinned, same shape


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: nn.Module, info: WeightsInfo, network_size: tuple[int, int], device: str,
                 precision: str, confidence: bool, output_at_input: bool, threads: int | None = None,
                 cuda_graphs: bool = False) -> None:
        # seg_node.engine.resolve checks these for an EngineConfig first, with fuller messages
        if precision == "int8":
            raise UnsupportedCombinationError("the torch backend runs fp32 or fp16, not int8; int8 needs torch2trt")
        if device == "cpu" and precision == "fp16":
            raise UnsupportedCombinationError("fp16 on CPU is slower than fp32 in PyTorch; use precision fp32 on CPU")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("device cuda asked for, but torch.cuda.is_available() is False here")
        if cuda_graphs and device != "cuda":
            raise UnsupportedCombinationError("cuda_graphs needs device cuda")
        if device == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        self.device = device
        self.precision = precision
        self.network_size = tuple(network_size)
        self.output_at_input = output_at_input
        self._torch_device = torch.device(device)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.preprocess = Preprocess(info, self.network_size).to(self._torch_device)
        # made once: a small tensor made per frame would be a synchronous copy to the GPU each time
        self._orders = {RGB_ORDER: None, BGR_ORDER: torch.tensor(BGR_ORDER, device=self._torch_device)}
        self.postprocess = Postprocess(confidence)
        self.network = self.build_network(model)
        self._graph = None
        if device == "cuda":
            # Two copy streams: an upload queued behind the previous frame's download would wait a network run.
            self.upload_stream = torch.cuda.Stream()
            self.download_stream = torch.cuda.Stream()
            self.compute_stream = torch.cuda.Stream()
            if cuda_graphs:
                self._graph = self._capture_graph()

    def build_network(self, model: nn.Module) -> nn.Module:
        network = fold_batchnorm(model).to(self._torch_device, dtype=self._dtype)
        return network.to(memory_format=torch.channels_last)

    def run_network(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image.to(self._dtype))

    def preprocess_frame(self, frame: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
        """uint8 1 x H x W x 3 on the device -> the network's input (Preprocess; a backend may change where to)."""
        return self.preprocess(frame, order)

    # ---- slots

    def new_input_slot(self) -> CpuInput | CudaInput:
        if self.device == "cpu":
            return CpuInput()
        return CudaInput(uploaded=new_event(), consumed=new_event())

    def new_output_slot(self) -> CpuOutput | CudaOutput:
        if self.device == "cpu":
            return CpuOutput()
        return CudaOutput(computed=new_event(), downloaded=new_event(), started=new_event(timing=True),
                          finished=new_event(timing=True))

    # ---- stages

    def prepare(self, slot: CpuInput | CudaInput, frame: np.ndarray, color_order: str) -> None:
        frame = check_frame(frame)
        if self.device == "cpu":
            with torch.inference_mode():
                order = self._orders[channel_order(color_order)]
                with warnings.catch_warnings():
                    # frames decoded from messages are read-only views; pre-processing only reads them
                    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                    pixels = torch.from_numpy(frame)
                slot.image = self.preprocess_frame(pixels[None], order)
                slot.size = frame.shape[:2] if self.output_at_input else None
            return
        if slot.used:
            slot.consumed.synchronize()  # the last frame in this slot has been read by the network
        if slot.host is None or tuple(slot.host.shape) != frame.shape:
            slot.host = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
            slot.frame = torch.empty(frame.shape, dtype=torch.uint8, device=self._torch_device)
        np.copyto(slot.host.numpy(), frame)
        with torch.cuda.stream(self.upload_stream):
            slot.frame.copy_(slot.host, non_blocking=True)
            slot.uploaded.record(self.upload_stream)
        slot.order = self._orders[channel_order(color_order)]
        slot.used = True

    def execute(self, source: CpuInput | CudaInput, target: CpuOutput | CudaOutput, confidence: bool) -> None:
        with torch.inference_mode():
            if self.device == "cpu":
                logits = self.run_network(source.image)
                # at network size: collect resizes on the host, in the pipeline's collect thread
                target.maps = self.postprocess(logits, None, confidence)
                target.size = source.size
                source.image = None
                return
            with torch.cuda.stream(self.compute_stream):
                self.compute_stream.wait_event(source.uploaded)
                image = self.preprocess_frame(source.frame[None], source.order)
                source.consumed.record(self.compute_stream)
                target.started.record(self.compute_stream)  # network_seconds: network and post-processing only
                size = tuple(source.frame.shape[:2]) if self.output_at_input else None
                if self._graph is None:
                    maps = self.postprocess(self.run_network(image), size, confidence)
                else:
                    graph, static_image, static_maps = self._graph
                    static_image.copy_(image)
                    graph.replay()  # the captured graph computes the confidence whenever it was built with it
                    wanted = static_maps if confidence else static_maps[:, :1]  # labels only: not downloaded
                    # static_maps is overwritten by the next replay: resize or clone it out
                    maps = resize_maps(wanted, size)
                    maps = maps.clone() if maps is wanted else maps
                target.finished.record(self.compute_stream)
                maps.record_stream(self.download_stream)  # read by the download on the download stream
                target.maps = maps
                target.computed.record(self.compute_stream)

    def collect(self, slot: CpuOutput | CudaOutput) -> Maps:
        if self.device == "cpu":
            maps = resize_maps_on_host(slot.maps[0].numpy(), slot.size)
            slot.maps = None
            return Maps(maps[0], maps[1] if maps.shape[0] > 1 else None)
        with torch.cuda.stream(self.download_stream):
            self.download_stream.wait_event(slot.computed)
            if slot.host is None or slot.host.shape != slot.maps.shape:
                slot.host = torch.empty(slot.maps.shape, dtype=torch.uint8, pin_memory=True)
            slot.host.copy_(slot.maps, non_blocking=True)
            slot.downloaded.record(self.download_stream)
        slot.downloaded.synchronize()
        slot.maps = None
        maps = slot.host[0].numpy().copy()  # the pinned buffer is reused by the next frame
        network_seconds = slot.started.elapsed_time(slot.finished) / 1000.0
        return Maps(maps[0], maps[1] if maps.shape[0] > 1 else None, network_seconds)

    # ---- CUDA graphs

    def _capture_graph(self) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Capture network + argmax at network size; the frame-size-dependent parts stay outside."""
        height, width = self.network_size
        static_image = torch.zeros(1, 3, height, width, device=self._torch_device).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside capture, as CUDA graphs require
                    self.postprocess(self.run_network(static_image))
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.compute_stream):
                static_maps = self.postprocess(self.run_network(static_image))
        log.info("captured a CUDA graph of the network at %dx%d", height, width)
        return graph, static_image, static_maps

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def close(self) -> None:
        self.synchronize()
        self._graph = None
