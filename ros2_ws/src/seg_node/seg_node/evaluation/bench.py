"""seg-bench: end-to-end speed of the engine, host uint8 frame to host uint8 label map, on CamVid frames.

For every model, size and available backend it measures the engine
synchronously (``infer`` one frame after another) and pipelined
(``FramePipeline`` kept busy by a feeder), and beside them a ``naive`` row
measured in the same run: what a first implementation does (eager fp32
model, float pre-processing with OpenCV/NumPy on the host, the full logits
copied back, argmax on the host, one frame at a time).

Frames are CamVid val images resized on the host to each size before timing
starts, as from a camera of that resolution; labels come back at that size.
``run_benchmark(BenchSettings(...))`` is the library call; ``seg_node.cli.bench``
is the console script.
"""

from __future__ import annotations

import copy
import os

# OpenMP threads that spin while waiting stall for whole scheduler slices when other processes share the
# cores (as on a robot, or this project's build machine): eager PyTorch then runs 10-50x slower in the main
# thread. Set before torch loads; every row of the run, the naive one included, runs under the same policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..datasets import DatasetError  # noqa: E402
from ..engine import (
    EngineConfig,
    EngineError,
    FramePipeline,
    SegmentationEngine,
    SegResult,
    create_engine_from_model,
)  # noqa: E402
from ..errors import UsageError  # noqa: E402
from ..models import build_model  # noqa: E402
from ..progress import progress_bar  # noqa: E402
from ..weights import SegClass, WeightsError, WeightsInfo, find_weights, load_weights  # noqa: E402

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
# frames the feeder keeps in flight: on CPU one prepared while one runs; on CUDA also one copying back
IN_FLIGHT = {"cpu": 2, "cuda": 3}
ROUNDS = 4  # the rows of one model and size are measured in turns, so changes in machine load hit all alike
# beside the repository (ros2_ws/src/seg_node/seg_node/evaluation/bench.py -> ../shared) in a source checkout
CAMVID = Path(__file__).resolve().parents[6] / "shared" / "datasets" / "camvid"
# CamVid's 11 classes; untrained weights only need the count and a normalisation
UNTRAINED_MEAN = (104.0, 112.0, 120.0)
UNTRAINED_STD = (58.0, 57.0, 59.0)


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


def load_model(name: str) -> tuple[nn.Module, WeightsInfo, str]:
    """The shipped ``<name>_camvid`` weights where present, else untrained ones (speed does not depend on it)."""
    try:
        path = find_weights(f"{name}_camvid")
        model, info = load_weights(path)
        return model, info, path.name
    except WeightsError:
        model = build_model(name, 11).eval()
        classes = [SegClass(i, f"class{i}", (20 * i, 20 * i, 20 * i)) for i in range(11)]
        info = WeightsInfo(name, dict(model.variant), classes, UNTRAINED_MEAN, UNTRAINED_STD, (360, 480), "none", [])
        return model, info, "untrained"


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


def summarise(latencies: list[float], frames: int, seconds: float) -> tuple[float, float, float]:
    milliseconds = 1000.0 * np.asarray(latencies)
    return frames / seconds, float(np.percentile(milliseconds, 50)), float(np.percentile(milliseconds, 99))


@dataclass
class Measurement:
    """One row's samples, gathered over the rounds."""

    backend: str
    precision: str
    mode: str
    device: str
    run: Callable[[int, int], tuple[list[float], float, int]]  # (first frame, count) -> latencies, seconds, dropped
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    dropped: int = 0


def naive_segmenter(model: nn.Module, info: WeightsInfo, height: int, width: int, device: str | None = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """The typical first implementation, for comparison, on its own copy of ``model``.

    The engines of the other rows are built from the same model afterwards; moving it to the GPU in place
    would hand ONNX Runtime's CPU export CUDA weights ("Input type and weight type should be the same").
    """
    import cv2

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = copy.deepcopy(model).to(device)
    mean, std = np.float32(info.mean), np.float32(info.std)

    def segment(frame: np.ndarray) -> np.ndarray:
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.float32)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        image = (image - mean) / std
        with torch.no_grad():
            logits = model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device)).cpu().numpy()
        labels = logits[0].argmax(0).astype(np.uint8)
        return cv2.resize(labels, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)

    return segment


def run_one_by_one(segment: Callable[[np.ndarray], object], frames: list[np.ndarray], first: int, count: int
                   ) -> tuple[list[float], float, int]:
    latencies = []
    start = time.perf_counter()
    for index in range(first, first + count):
        begin = time.perf_counter()
        segment(frames[index % len(frames)])
        latencies.append(time.perf_counter() - begin)
    return latencies, time.perf_counter() - start, 0


def run_pipelined(engine: SegmentationEngine, frames: list[np.ndarray], first: int, count: int, camera_fps: float
                  ) -> tuple[list[float], float, int]:
    """Feed ``count`` frames; with ``camera_fps`` 0 the feeder keeps IN_FLIGHT frames in the pipeline
    (as fast as it goes), else at that rate like a camera (stale frames drop)."""
    depth = IN_FLIGHT.get(engine.device, 2)
    latencies: list[float] = []
    errors: list[Exception] = []
    finished = threading.Condition()
    results = 0

    def on_result(result: SegResult) -> None:
        nonlocal results
        if result.error is not None:
            errors.append(result.error)
        else:
            latencies.append(result.timings["total"])
        with finished:
            results += 1
            finished.notify_all()

    pipeline = FramePipeline(engine, on_result=on_result)
    try:
        start = time.perf_counter()
        for index in range(count):
            if camera_fps > 0:
                time.sleep(max(0.0, start + index / camera_fps - time.perf_counter()))
            else:
                # no more in flight than keep the device busy: more would only wait and add latency.
                # Woken by results rather than polling, which would take the GIL from the pipeline's threads.
                with finished:
                    finished.wait_for(lambda submitted=index: submitted - results < depth)
                while pipeline.stats().waiting:  # not yet taken (just after a result): a new frame would replace it
                    time.sleep(0.0002)
            pipeline.submit(frames[(first + index) % len(frames)], tag=index, color_order="bgr")
        with finished:
            finished.wait_for(lambda: results + pipeline.stats().dropped >= count)
        seconds = time.perf_counter() - start
        dropped = pipeline.stats().dropped
    finally:
        pipeline.close()
    if errors:
        raise EngineError(f"{len(errors)} frames failed in the pipeline, the first: {errors[0]!r}")
    return latencies, seconds, dropped


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


def bench_one(model_name: str, size: tuple[int, int], camvid_frames: list[np.ndarray], settings: BenchSettings,
              skipped: dict[str, str], progress: tqdm) -> tuple[list[Row], dict[str, list[float]]]:
    """The naive row and, per available backend, the synchronous and pipelined rows for one model and size."""
    height, width = size
    model, info, weights = load_model(model_name)
    frames = resize_frames(camvid_frames, height, width)
    count = settings.frames or DEFAULT_FRAMES.get(height * width, 20)
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)  # as the torch backend sets it
    naive = naive_segmenter(model, info, height, width)
    measurements = [Measurement("torch-eager", "fp32", "naive", "cuda" if torch.cuda.is_available() else "cpu",
                                lambda first, n: run_one_by_one(naive, frames, first, n))]
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
            infer = partial(engine.infer, color_order="bgr")
            measurements += [
                Measurement(backend, engine.precision, "synchronous", engine.device,
                            lambda first, n, infer=infer: run_one_by_one(infer, frames, first, n)),
                Measurement(backend, engine.precision, "pipelined", engine.device,
                            lambda first, n, engine=engine: run_pipelined(engine, frames, first, n,
                                                                          settings.camera_fps)),
            ]
        for measurement in measurements:  # warm-up: first-run allocations and lazy initialisation
            measurement.run(0, WARMUP_FRAMES)
        per_round = [count // ROUNDS + (r < count % ROUNDS) for r in range(ROUNDS)]
        for round_index, round_count in enumerate(per_round):
            for measurement in measurements if round_count else []:
                latencies, seconds, dropped = measurement.run(sum(per_round[:round_index]), round_count)
                measurement.latencies += latencies
                measurement.seconds += seconds
                measurement.dropped += dropped
            progress.update()
    finally:
        for engine in engines:
            engine.close()
    rows = []
    for m in measurements:
        fps, p50, p99 = summarise(m.latencies, len(m.latencies), m.seconds)
        rows.append(Row(model_name, m.backend, m.precision, height, width, m.mode, round(fps, 2), round(p50, 2),
                        round(p99, 2), m.dropped, len(m.latencies), weights, m.device))
    return rows, {f"{m.backend} {m.mode}": m.latencies for m in measurements}


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
