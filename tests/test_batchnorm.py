"""Precise BatchNorm statistics for the final weights (training.batchnorm) and the trainer's ``bn_recalibration``."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
import torch
from conftest import REPO_ROOT
from torch import nn
from training_helpers import tiny_config

from seg_node.datasets import camvid
from seg_node.engine.graph import Preprocess
from seg_node.evaluation.evaluate import evaluate_model, weights_info_for
from seg_node.training.batchnorm import batch_norms, recalibrate_batchnorm
from seg_node.training.checkpoint import export_checkpoint
from seg_node.training.data import whole_frames
from seg_node.training.trainer import Trainer
from seg_node.weights import load_weights


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.5), nn.Conv2d(4, 2, 1),
        nn.BatchNorm2d(2),
    )


def test_the_statistics_become_the_average_of_the_batches_with_dropout_off():
    network = small_network().train()
    batches = [torch.randn(3, 3, 8, 8) * 2 + 1, torch.randn(3, 3, 8, 8) - 1]
    for _ in range(3):  # the stale statistics that training leaves
        network(torch.randn(2, 3, 8, 8) * 5)

    assert recalibrate_batchnorm(network, batches) == 6
    assert network.training and all(norm.momentum == 0.1 for norm in batch_norms(network))
    first, second = network[1], network[5]
    inputs = [network[0](x) for x in batches]
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    assert torch.allclose(first.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(first.running_var, expected_var, atol=1e-6)
    # the second BatchNorm's inputs as inference computes them: batch statistics above it, no dropout
    with torch.no_grad():
        after_dropout = []
        for x in inputs:
            normalised = nn.functional.batch_norm(x, None, None, first.weight, first.bias, True)
            after_dropout.append(network[4](torch.relu(normalised)))
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in after_dropout]).mean(0)
    assert torch.allclose(second.running_mean, expected_mean, atol=1e-5)


def test_without_batches_the_statistics_stay():
    network = small_network().eval()
    network[1].running_mean.fill_(3.0)
    assert recalibrate_batchnorm(network, []) == 0
    assert torch.equal(network[1].running_mean, torch.full((4,), 3.0)) and not network.training


def test_whole_frames_are_what_the_engine_makes_of_each_image(tiny_camvid):
    spec = camvid(tiny_camvid["data"], tiny_camvid["train"])
    mean, std = (100.0, 110.0, 120.0), (50.0, 60.0, 70.0)
    preprocess = Preprocess(weights_info_for(small_network(), mean, std), (90, 120))
    batches = list(whole_frames(spec, preprocess, 2, "cpu"))
    assert sum(b.shape[0] for b in batches) == len(spec.pairs) and all(b.shape[1:] == (3, 90, 120) for b in batches)
    image = spec.read(0)[0]
    assert image.shape[:2] != (90, 120)
    pixels = batches[0][0] * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    resized = torch.from_numpy(cv2.resize(image, (120, 90), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1).float()
    # bilinear at cv2.resize's pixel centres, less its rounding to uint8: within half a grey level
    assert (pixels - resized).abs().max() <= 0.5 + 1e-3
    assert torch.equal(batches[0][:1], preprocess(torch.from_numpy(image)[None]))


@pytest.mark.slow
def test_the_trainer_recalibrates_the_kept_weights_before_the_last_validation(tmp_path, tiny_camvid):
    torch.set_num_threads(1)
    settings = dict(val_list=tiny_camvid["val"], epochs=2, ema_decay=0.5, input_size=[90, 120])
    plain = Trainer(tiny_config(tmp_path / "plain", tiny_camvid, **settings))
    plain.run()
    trainer = Trainer(tiny_config(tmp_path / "precise", tiny_camvid, bn_recalibration=True, **settings))
    trainer.run()

    last = trainer.progress.history[-1]
    assert last["val_miou_before_bn_recalibration"] == pytest.approx(plain.progress.history[-1]["val_miou"])
    assert "val_miou_before_bn_recalibration" not in trainer.progress.history[0]
    kept = trainer.ema.module
    assert last["val_miou"] == pytest.approx(
        evaluate_model(kept, (trainer.mean, trainer.std), trainer.val_spec, trainer.device).matrix.miou()
    )
    # the kept weights are the plain run's, with the statistics of the whole training frames
    for (name, a), b in zip(plain.ema.module.state_dict().items(), kept.state_dict().values(), strict=True):
        if name.endswith(("running_mean", "running_var")):
            assert not torch.equal(a, b), name
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(a, b), name
    reference = plain.ema.module
    preprocess = Preprocess(weights_info_for(reference, plain.mean, plain.std), (90, 120))
    recalibrate_batchnorm(reference, whole_frames(plain.source, preprocess, 2, plain.device))
    for name, value in reference.state_dict().items():
        assert torch.allclose(value.float(), kept.state_dict()[name].float()), name

    model, info = load_weights(export_checkpoint(tmp_path / "precise/run/last.pt", tmp_path / "w/precise.safetensors"))
    assert info.val_miou == pytest.approx(last["val_miou"])
    stage = info.training["stages"][-1]
    assert stage["bn_recalibration"] is True and stage["scale_range"] == [0.5, 2.0]
    assert "bn_recalibration" in (tmp_path / "precise/run/history.csv").read_text().splitlines()[0]


def test_the_recalibration_tool_gives_a_checkpoints_before_and_after_as_the_trainer_would(tmp_path, tiny_camvid):
    torch.set_num_threads(1)
    settings = dict(val_list=tiny_camvid["val"], epochs=1, input_size=[90, 120])
    Trainer(tiny_config(tmp_path / "plain", tiny_camvid, **settings)).run()
    precise = Trainer(tiny_config(tmp_path / "precise", tiny_camvid, bn_recalibration=True, **settings))
    precise.run()
    folder = tmp_path / "plain/run"
    written = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

    tool = [sys.executable, str(REPO_ROOT / "tools" / "batchnorm_recalibration.py")]
    run = subprocess.run([*tool, str(folder / "last.pt"), "--json", str(tmp_path / "bn.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads((tmp_path / "bn.json").read_text())
    last = precise.progress.history[-1]
    assert row["epoch"] == 1 and row["val_list"] == tiny_camvid["val"]
    assert row["before"] == pytest.approx(100 * last["val_miou_before_bn_recalibration"], abs=0.005)
    assert row["after"] == pytest.approx(100 * last["val_miou"], abs=0.005)
    assert f"| {folder / 'last.pt'} | 1 | val | {row['before']:.2f}% | {row['after']:.2f}% |" in run.stdout
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == written  # nothing written there

    Trainer(tiny_config(tmp_path / "unscored", tiny_camvid, epochs=1)).run()
    run = subprocess.run([*tool, str(tmp_path / "unscored/run/last.pt")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "without a validation list" in run.stderr and "Traceback" not in run.stderr
