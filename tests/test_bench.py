"""seg-bench builds every row from one model (the naive row must not move it), and its rows, like every speed
figure, come from the one timing harness, ``timing.time_engine``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from seg_node.engine import EngineConfig, create_engine_from_model
from seg_node.evaluation.bench import BenchSettings, format_table, naive_row_segmenter, run_benchmark
from seg_node.evaluation.timing import TimingSettings, time_engine
from seg_node.models import build_model
from seg_node.weights import SegClass, WeightsInfo


def test_the_naive_row_leaves_the_shared_model_where_it_was():
    torch.manual_seed(0)
    model = build_model("cgnet", 3, m=2, n=2).eval()
    info = WeightsInfo(architecture="cgnet", variant={"m": 2, "n": 2},
                       classes=[SegClass(i, f"c{i}", (i, i, i)) for i in range(3)],
                       mean=(100.0, 100.0, 100.0), std=(50.0, 50.0, 50.0), input_size=(32, 48),
                       dataset="synthetic", splits=["train"])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    # "meta" stands in for the GPU: a device the CPU export of the next row could not read either
    naive_row_segmenter(model, info, device="meta")
    assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    frame = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    with create_engine_from_model(model, info, EngineConfig(backend="torch", device="cpu", threads=1)) as engine:
        assert engine.infer(frame).labels.shape == (32, 48)


# ---- the one timing harness (timing.time_engine), as seg-bench, seg-gpu-check and the node measurement use it


@pytest.fixture(scope="module")
def tiny_engine():
    from seg_node.evaluation.gpu_models import load_model

    model, info, _ = load_model("contextnet")
    config = EngineConfig(backend="torch", device="cpu", network_size=(32, 48), threads=1)
    with create_engine_from_model(model, info, config) as engine:
        yield engine


def test_time_engine_measures_exactly_the_frames_asked(tiny_engine):
    frames = [np.full((32, 48, 3), value, np.uint8) for value in (10, 120, 240)]
    for mode in ("synchronous", "pipelined"):
        result = time_engine(tiny_engine, frames, TimingSettings(mode, seconds=0.0, warmup=1, minimum=5, maximum=5,
                                                                 color_order="bgr"))
        assert result.frames == 5 and result.dropped == 0 and result.seconds > 0 and result.fps > 0, mode
        assert 0 < result.percentile_ms(50) <= result.percentile_ms(99)
    with pytest.raises(ValueError, match="timing mode"):
        time_engine(tiny_engine, frames, TimingSettings("batched"))


def test_time_engine_paces_frames_like_a_camera(tiny_engine):
    frames = [np.zeros((32, 48, 3), np.uint8)]
    result = time_engine(tiny_engine, frames, TimingSettings("pipelined", seconds=0.0, warmup=1, minimum=6,
                                                             maximum=6, camera_fps=20.0))
    assert result.seconds >= 5 / 20.0  # six frames at 20 fps span at least five intervals
    assert result.frames + result.dropped == 6


def test_seg_bench_rows_come_from_the_harness():
    settings = BenchSettings(models=["contextnet"], sizes=[(32, 48)], backends=["torch-cpu"], frames=4, threads=1)
    if not (settings.camvid / "val.txt").is_file():
        pytest.skip(f"CamVid is not at {settings.camvid}")
    rows, samples, skipped = run_benchmark(settings, progress=False)
    assert [(row.backend, row.mode) for row in rows] == [
        ("torch-eager", "naive"), ("torch-cpu", "synchronous"), ("torch-cpu", "pipelined")]
    assert all(row.frames == 4 and row.fps > 0 and row.dropped == 0 for row in rows) and not skipped
    assert [len(values) for values in samples[("contextnet", "32x48")].values()] == [4, 4, 4]
    assert "experimental" not in format_table(rows)
    onnxruntime_row = replace(rows[1], backend="onnxruntime")
    assert "onnxruntime: experimental: ONNX Runtime's CUDA/TensorRT providers need onnxruntime-gpu" in format_table(
        [*rows, onnxruntime_row])
