"""seg-bench: end-to-end speed of the engine, host uint8 frame to host uint8 label map, on CamVid frames.

For every model, size and available backend it measures the engine
synchronously (``infer`` one frame after another) and pipelined
(``FramePipeline`` kept busy by a feeder), and beside them a ``naive`` row
measured in the same run: what a first implementation does (eager fp32
model, float pre-processing with NumPy on the host, the full logits
copied back, argmax on the host, one frame at a time).

Frames are CamVid val images resized on the host to each size before timing
starts, as from a camera of that resolution; labels come back at that size.
Every figure is timed by ``timing`` (``time_engine`` and ``time_calls``), the one timing harness
that seg-gpu-check and the node measurement use too. ``run_benchmark(BenchSettings(...))`` is the
library call; ``seg_node.cli.bench`` is the console script.

The onnxruntime rows run on the CPU: ONNX Runtime's CUDA and TensorRT execution providers need the
onnxruntime-gpu build, which the desktop image installs and the Jetson image does not (``EXPERIMENTAL``).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting stall for whole scheduler slices when other processes share the
# cores (as on a robot, or this project's build machine): eager PyTorch then runs 10-50x slower in the main
# thread. Set before torch loads; every row of the run, the naive one included, runs under the same policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..datasets import DatasetError  # noqa: E402
from ..engine import EngineConfig, EngineError, SegmentationEngine, create_engine_from_model  # noqa: E402
from ..errors import UsageError  # noqa: E402
from ..progress import progress_bar  # noqa: E402
from ..weights import WeightsInfo  # noqa: E402
from .gpu_models import eager_copy, load_model, naive_segmenter  # noqa: E402
from .timing import TimingResult, TimingSettings, time_calls, time_engine  # noqa: E402

log = logging.getLogger("seg_node.bench")

MODELS = ("cgnet", "contextnet")
SIZES = ((360, 480), (512, 1024), (1024, 2048))
# name -> engine configuration; "auto" precision: fp16 on CUDA, fp32 on CPU
BACKENDS: dict[str, EngineConfig] = {
    "torch2trt": EngineConfig(backend="torch2trt"),
    "torch-cuda": EngineConfig(backend="torch", device="cuda"),
    "onnxruntime": EngineConfig(backend="onnxruntime", device="cpu"),
    "torch-cpu": EngineConfig(backend="torch", device="cpu"),
}
for _config in BACKENDS.values():  # the row names stand for engine options; those must exist
    _config.validate()
# Frames per measurement when --frames is not given: about the same time at each size.
DEFAULT_FRAMES = {360 * 480: 40, 512 * 1024: 16, 1024 * 2048: 6}
WARMUP_FRAMES = 2
ROUNDS = 4  # the rows of one model and size are measured in turns, so changes in machine load hit all alike
# beside the repository (ros2_ws/src/seg_node/seg_node/evaluation/bench.py -> ../shared) in a source checkout
CAMVID = Path(__file__).resolve().parents[6] / "shared" / "datasets" / "camvid"
# ONNX Runtime on a GPU: only with onnxruntime-gpu, which the Jetson image does not install
EXPERIMENTAL = {"onnxruntime": "ONNX Runtime's CUDA/TensorRT providers need onnxruntime-gpu (desktop image only); "
                "this row runs on the CPU"}


@dataclass
class Row:
    model: str
    backend: str
    precision: str
    height: int
    width: int
    mode: str  # "pipelined", "synchronous" or "naive"
    fps: float
    latency_ms_p50: float
    latency_ms_p99: float
    dropped: int
    frames: int
    weights: str
    device: str


def read_frames(camvid: Path, count: int) -> list[np.ndarray]:
    """CamVid val frames as a camera driver delivers them: uint8 BGR."""
    import cv2

    if not (camvid / "val.txt").is_file():
        raise DatasetError(f"{camvid / 'val.txt'} does not exist; pass --camvid, the CamVid folder")
    lines = (camvid / "val.txt").read_text().split("\n")
    paths = [camvid / line.split()[0] for line in lines if line.strip()][:count]
    if not paths:
        raise DatasetError(f"no CamVid frames listed in {camvid / 'val.txt'}; pass --camvid")
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]


def resize_frames(frames: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    import cv2

    return [frame if frame.shape[:2] == (height, width) else cv2.resize(frame, (width, height)) for frame in frames]


@dataclass
class Measurement:
    """One row's samples, gathered over the rounds: ``run(first, count)`` times ``count`` frames from ``first``."""

    backend: str
    precision: str
    mode: str
    device: str
    run: Callable[[int, int], TimingResult]
    result: TimingResult = field(default_factory=TimingResult)


def engine_measurement(engine: SegmentationEngine, backend: str, mode: str, frames: list[np.ndarray],
                       camera_fps: float) -> Measurement:
    """A ``synchronous`` or ``pipelined`` row of ``engine`` on BGR ``frames``, through ``time_engine``."""
    def run(first: int, count: int) -> TimingResult:
        settings = TimingSettings(mode, seconds=0.0, warmup=0, minimum=count, maximum=count, color_order="bgr",
                                  camera_fps=camera_fps, first=first)
        return time_engine(engine, frames, settings)

    return Measurement(backend, engine.precision, mode, engine.device, run)


def naive_measurement(segment: Callable[[np.ndarray], object], device: str, frames: list[np.ndarray]) -> Measurement:
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(first: int, count: int) -> TimingResult:
        settings = TimingSettings(seconds=0.0, warmup=0, minimum=count, maximum=count, first=first)
        return time_calls(segment, frames, settings, synchronize)

    return Measurement("torch-eager", "fp32", "naive", device, run)


def plot_latencies(samples: dict[tuple[str, str], dict[str, list[float]]], path: Path) -> None:
    """One panel per model and size; a latency histogram per backend and mode."""
    from ..plots import plt, save_figure

    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 2.6 * len(samples)), squeeze=False)
    for ax, ((model, size), series) in zip(axes[:, 0], samples.items(), strict=True):
        top = max(np.percentile(values, 99.5) for values in series.values()) * 1000
        bins = np.linspace(0, top * 1.05, 60)
        for label, values in series.items():
            ax.hist(1000 * np.asarray(values), bins=bins, histtype="step", linewidth=1.5, label=label)
        ax.set_title(f"{model} {size}: latency, host frame in to host labels out")
        ax.set_xlabel("ms")
        ax.set_ylabel("frames")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def format_table(rows: list[Row]) -> str:
    header = f"{'model':<11}{'backend':<13}{'prec':<6}{'size':>10}  {'mode':<12}{'fps':>8}{'p50 ms':>9}" \
             f"{'p99 ms':>9}{'dropped':>8}{'vs naive':>9}"
    naive = {(r.model, r.height, r.width): r.fps for r in rows if r.mode == "naive"}
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = r.fps / naive[(r.model, r.height, r.width)] if (r.model, r.height, r.width) in naive else float("nan")
        lines.append(f"{r.model:<11}{r.backend:<13}{r.precision:<6}{f'{r.height}x{r.width}':>10}  {r.mode:<12}"
                     f"{r.fps:>8.1f}{r.latency_ms_p50:>9.1f}{r.latency_ms_p99:>9.1f}{r.dropped:>8d}{ratio:>8.2f}x")
    lines += [f"{backend}: experimental: {note}" for backend, note in EXPERIMENTAL.items()
              if any(r.backend == backend for r in rows)]
    return "\n".join(lines)


@dataclass
class BenchSettings:
    """What seg-bench measures (its flags, same names)."""

    models: list[str] = field(default_factory=lambda: list(MODELS))
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(SIZES))
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    frames: int | None = None  # per measurement; None: DEFAULT_FRAMES by size
    camera_fps: float = 0.0
    threads: int | None = None
    camvid: Path = CAMVID
    engine_cache_dir: str | None = None


def naive_row_segmenter(model: nn.Module, info: WeightsInfo, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """``gpu_models.naive_segmenter`` for BGR frames on its own copy of ``model``.

    The engines of the other rows are built from the same model afterwards; moving it to the GPU in place
    would hand ONNX Runtime's CPU export CUDA weights ("Input type and weight type should be the same").
    """
    return naive_segmenter(eager_copy(model, device), info, device, color_order="bgr")


def bench_one(model_name: str, size: tuple[int, int], camvid_frames: list[np.ndarray], settings: BenchSettings,
              skipped: dict[str, str], progress: tqdm) -> tuple[list[Row], dict[str, list[float]]]:
    """The naive row and, per available backend, the synchronous and pipelined rows for one model and size."""
    height, width = size
    model, info, weights = load_model(model_name)
    frames = resize_frames(camvid_frames, height, width)
    count = settings.frames or DEFAULT_FRAMES.get(height * width, 20)
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)  # as the torch backend sets it
    device = "cuda" if torch.cuda.is_available() else "cpu"
    measurements = [naive_measurement(naive_row_segmenter(model, info, device), device, frames)]
    engines: list[SegmentationEngine] = []
    try:
        for backend in settings.backends:
            if backend in skipped:
                continue
            config = replace(BACKENDS[backend], network_size=(height, width), threads=settings.threads,
                             engine_cache_dir=settings.engine_cache_dir)
            try:
                engine = create_engine_from_model(model, info, config)
            except EngineError as error:  # BackendUnavailableError and configurations this machine cannot run
                skipped[backend] = str(error)
                continue
            engines.append(engine)
            measurements += [engine_measurement(engine, backend, mode, frames, settings.camera_fps)
                             for mode in ("synchronous", "pipelined")]
        for measurement in measurements:  # warm-up: first-run allocations and lazy initialisation
            measurement.run(0, WARMUP_FRAMES)
        per_round = [count // ROUNDS + (r < count % ROUNDS) for r in range(ROUNDS)]
        for round_index, round_count in enumerate(per_round):
            for measurement in measurements if round_count else []:
                measurement.result.add(measurement.run(sum(per_round[:round_index]), round_count))
            progress.update()
    finally:
        for engine in engines:
            engine.close()
    rows = []
    for m in measurements:
        result = m.result
        rows.append(Row(model_name, m.backend, m.precision, height, width, m.mode, round(result.fps, 2),
                        round(result.percentile_ms(50), 2), round(result.percentile_ms(99), 2), result.dropped,
                        result.frames, weights, m.device))
    return rows, {f"{m.backend} {m.mode}": m.result.latencies for m in measurements}


def run_benchmark(settings: BenchSettings, progress: bool = True
                  ) -> tuple[list[Row], dict[tuple[str, str], dict[str, list[float]]], dict[str, str]]:
    """Rows of every model, size and backend; latency samples per (model, size); skipped backends and why."""
    unknown = [m for m in settings.models if m not in MODELS] + [b for b in settings.backends if b not in BACKENDS]
    if unknown:
        raise UsageError(f"unknown model or backend {unknown}; models: {', '.join(MODELS)}, "
                         f"backends: {', '.join(BACKENDS)}")
    camvid_frames = read_frames(settings.camvid, 100)
    rows: list[Row] = []
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    skipped: dict[str, str] = {}
    plan = [(model, size) for model in settings.models for size in settings.sizes]
    bar = progress_bar(total=len(plan) * ROUNDS, desc="seg-bench", unit="round", disable=not progress)
    try:
        for model_name, size in plan:
            new_rows, samples[(model_name, f"{size[0]}x{size[1]}")] = bench_one(
                model_name, size, camvid_frames, settings, skipped, bar)
            rows += new_rows
    finally:
        bar.close()
    return rows, samples, skipped
