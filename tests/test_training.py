"""The offline trainer and evaluator: data sets, class weights, the poly schedule, exact resume, export."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import PACKAGE_ROOT, REPO_ROOT
from training_helpers import tiny_config

from seg_node import plots
from seg_node.datasets import (
    CITYSCAPES_IGNORE,
    DatasetError,
    camvid,
    cityscapes,
    enet_class_weights,
    image_folder,
    label_histogram,
)
from seg_node.evaluation.evaluate import evaluate_model
from seg_node.training import trainer as trainer_module
from seg_node.training.augment import Augmentation, augment, augment_crop, draw_params
from seg_node.training.augment import jitter_colors as jitter_colors_cv2
from seg_node.training.checkpoint import export_checkpoint, load_checkpoint
from seg_node.training.config import TrainingConfig, TrainingError, load_config
from seg_node.training.cpu_training import KERNEL_MODULES
from seg_node.training.device_augment import crop_sample, hsv_to_rgb, rgb_to_hsv
from seg_node.training.device_augment import jitter_colors as jitter_colors_torch
from seg_node.training.trainer import Trainer
from seg_node.weights import load_weights


def test_camvid_lists_parse_and_report_problems(camvid_root, tmp_path):
    spec = camvid(camvid_root, "train.txt")
    assert len(spec.pairs) == 367 and spec.num_classes == 11 and spec.ignore_index == 11
    image, label = spec.read(0)
    assert image.shape == (360, 480, 3) and label.shape == (360, 480) and label.max() <= 11
    (tmp_path / "bad.txt").write_text("only-one-column.jpg\n")
    with pytest.raises(DatasetError, match="expected 'image label'"):
        camvid(camvid_root, str(tmp_path / "bad.txt"))
    (tmp_path / "missing.txt").write_text("nope.jpg nope.png\n")
    with pytest.raises(DatasetError, match="missing"):
        camvid(camvid_root, str(tmp_path / "missing.txt"))


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (tmp_path / "gtFine" / split / "aachen").mkdir(parents=True)
        cv2.imwrite(
            str(tmp_path / f"leftImg8bit/{split}/aachen/aachen_000000_000019_leftImg8bit.png"),
            np.zeros((4, 6, 3), np.uint8),
        )
        # label ids: 7 road, 26 car, 33 bicycle, 0 unlabeled, 4 static, 24 person
        label = np.array([[7, 26, 33, 0, 4, 24]] * 4, dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"gtFine/{split}/aachen/aachen_000000_000019_gtFine_labelIds.png"), label)
    spec = cityscapes(tmp_path, "train")
    assert spec.num_classes == 19 and spec.ignore_index == CITYSCAPES_IGNORE
    _, train_ids = spec.read(0)
    assert train_ids[0].tolist() == [0, 13, 18, 255, 255, 11]
    with pytest.raises(DatasetError, match="no images"):
        cityscapes(tmp_path, "test")


def test_image_folder_with_class_table(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images/a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "labels/a.png"), np.ones((8, 8), np.uint8))
    table = "classes:\n  - {name: ground, color: [0, 255, 0]}\n  - {name: obstacle, color: [255, 0, 0]}\n"
    (tmp_path / "classes.yaml").write_text(table + "ignore_index: 255\n")
    spec = image_folder(tmp_path / "images", tmp_path / "labels", tmp_path / "classes.yaml")
    assert [c.name for c in spec.classes] == ["ground", "obstacle"] and spec.ignore_index == 255
    assert label_histogram(spec).tolist() == [0, 64]
    cv2.imwrite(str(tmp_path / "images/b.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="has no label"):
        image_folder(tmp_path / "images", tmp_path / "labels", tmp_path / "classes.yaml")


def test_enet_class_weights_follow_the_formula():
    weights = enet_class_weights(np.array([700, 200, 100, 0]))
    expected = 1 / np.log(1.10 + np.array([0.7, 0.2, 0.1, 0.0]))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights[2] > weights[0], "rare classes weigh more"


def test_recipes_load_and_unknown_keys_are_rejected(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    cgnet = load_config(repo / "configs/cgnet_camvid.yaml", {"lr": 0.002})
    assert cgnet.optimizer == "adam" and cgnet.lr == 0.002 and cgnet.crop_size == (360, 360)
    assert cgnet.poly_power == 0.9 and cgnet.weight_decay == 5e-4 and cgnet.batch_size == 8
    context = load_config(repo / "configs/contextnet_camvid.yaml", {})
    assert (context.optimizer, context.lr, context.eps, context.poly_power) == ("rmsprop", 0.045, 1.0, 0.98)
    assert context.aux_weight == 0.4 and context.rms_decay == 0.9 and context.momentum == 0.9
    for name in ("cgnet_cityscapes", "contextnet_cityscapes"):
        assert load_config(repo / f"configs/{name}.yaml", {}).dataset == "cityscapes"
    (tmp_path / "typo.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(TrainingError, match=r"unknown keys \['learning_rate'\]; known: .*'lr'"):
        load_config(tmp_path / "typo.yaml", {})
    (tmp_path / "bad.yaml").write_text("epochs: many\n")
    with pytest.raises(TrainingError, match="epochs: expected int, got 'many'"):
        load_config(tmp_path / "bad.yaml", {})
    with pytest.raises(TrainingError, match="optimizer 'sgd' is not one of adam, rmsprop"):
        load_config(None, {"optimizer": "sgd"})
    # YAML reads 1e-3 (no dot) as a string; the typed config makes it the float it means
    assert load_config(None, {"lr": "1e-3"}).lr == 1e-3


def test_every_config_field_is_an_option_with_its_default_in_help(tmp_path):
    from seg_node.cli.train import build_parser, config_from_args

    parser = build_parser()
    help_text = " ".join(parser.format_help().split())
    defaults = TrainingConfig()
    for key in TrainingConfig.keys():
        value = getattr(defaults, key)
        shown = list(value) if isinstance(value, tuple) else value
        assert f"--{key.replace('_', '-')}" in help_text and f"(default: {shown!r})" in help_text, key
    args = parser.parse_args(["--lr", "0.01", "--crop-size", "[64, 96]", "--mirror", "false"])
    config = config_from_args(args)
    assert (config.lr, config.crop_size, config.mirror, config.epochs) == (0.01, (64, 96), False, 100)
    # checkpoints hold the config as plain values: weights_only loading keeps working
    torch.save({"config": config.to_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert TrainingConfig.from_dict(loaded) == config


@pytest.mark.slow
def test_poly_schedule_decays_per_iteration_and_the_log_stays_calm(tmp_path, tiny_camvid, capsys):
    # uncompiled: compiling the CPU training kernels at the first step can outlast the log's 30 s interval
    config = tiny_config(tmp_path, tiny_camvid, model="cgnet", variant="M3N9", optimizer="adam", lr=1e-3, max_steps=3,
                         cpu_training_kernels=False)
    trainer = Trainer(config)
    trainer.run()
    total = trainer.steps_per_epoch * 2
    assert trainer.progress.global_step == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 3 / total) ** 0.9)
    drawn = Counter(line.split(":")[0] for line in capsys.readouterr().err.split("\r") if line.strip())
    assert drawn.keys() >= {"decoding", "epoch 1/2", "epoch 2/2"}, drawn
    assert max(drawn.values()) <= 2, f"not a terminal: each bar is drawn when it starts and ends, not more {drawn}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device", "cache_gb", "ema_decay", "model", "cutmix"),
    [
        pytest.param("cpu", 4.0, 0.0, "contextnet", 0.0, id="cpu-cached"),  # images in memory, crops computed directly
        pytest.param("cpu", 0.0, 0.0, "contextnet", 0.0, id="cpu-from-disk"),
        # the weights' moving average resumes too, and the recomputed BatchNorm statistics are the same
        pytest.param("cpu", 4.0, 0.5, "contextnet", 0.0, id="cpu-cached-ema-bn-recalibration"),
        pytest.param("cpu", 4.0, 0.0, "cgnet", 0.0, id="cpu-cgnet-training-kernels"),  # training.cpu_training's kernels
        pytest.param("cpu", 4.0, 0.0, "contextnet", 1.0, id="cpu-cached-cutmix"),  # the resumed step mixes the same
        pytest.param(
            "cuda", 4.0, 0.0, "contextnet", 0.0, id="cuda-on-device",  # data on the GPU, augmented there, bf16 autocast
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ),
    ],
)
def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, tiny_camvid, device, cache_gb, ema_decay, model,
                                                      cutmix, monkeypatch):
    torch.set_num_threads(1)
    if device == "cuda":  # exact equality needs deterministic kernels
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def config(folder: str, **overrides) -> TrainingConfig:
        variant = {"variant": "M3N9", "optimizer": "adam", "lr": 1e-3} if model == "cgnet" else {}
        return tiny_config(tmp_path / folder, tiny_camvid, device=device, cache_gb=cache_gb, ema_decay=ema_decay,
                           bn_recalibration=bool(ema_decay), model=model, cutmix=cutmix, **variant, **overrides)

    straight = Trainer(config("a"))
    assert straight.device.type == device and (straight.device_batches is not None) == (device == "cuda")
    swapped = [module for module in straight.model.modules() if type(module) in KERNEL_MODULES.values()]
    assert len(swapped) == (66 if model == "cgnet" else 0)  # the trainer swaps CGNet's kernel modules in
    straight.run()

    interrupted = Trainer(config("b", max_steps=1))
    interrupted.run()
    assert interrupted.progress.step_in_epoch == 1
    resumed = Trainer(config("b"), resume=str(tmp_path / "b/run/last.pt"))
    assert resumed.progress.global_step == 1
    resumed.run()

    assert resumed.progress.global_step == straight.progress.global_step == 4
    kept = [(straight.model, resumed.model)]
    if ema_decay:
        kept.append((straight.ema, resumed.ema))
        assert int(resumed.ema.n_averaged) == 4
    for a_model, b_model in kept:
        for (name, a), (_, b) in zip(a_model.state_dict().items(), b_model.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    a, b = straight.progress.history, resumed.progress.history
    assert [(r["epoch"], r["step"], r["lr"]) for r in b] == [(r["epoch"], r["step"], r["lr"]) for r in a] != []
    # epoch 1 of the resumed run averages only the step after the resume; epoch 2 is the same training
    assert b[1]["loss"] == a[1]["loss"] and math.isfinite(b[0]["loss"]) and b[0]["images_per_s"] > 0


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_camvid):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "seg_node.cli.train",
        "--model", "cgnet", "--variant", "M3N9",
        "--data", tiny_camvid["data"], "--train-list", f"[{tiny_camvid['train']}]", "--val-list", "''",
        "--crop-size", "[64, 64]", "--batch-size", "2", "--epochs", "1000", "--workers", "0", "--out", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1:"):
            break
    assert re.search(r"epoch 1: loss [\d.]+, [\d.]+ images/s", line), line
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and "--resume" in output
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["global_step"] >= 2


def test_a_stop_request_whose_exception_python_dropped_still_stops_the_run_at_the_next_step(tmp_path, tiny_camvid,
                                                                                          monkeypatch):
    # what seg-train's signal handler leaves when its KeyboardInterrupt lands in a weakref callback: only the flag
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=50))
    step = trainer.optimizer.step

    def step_and_request_a_stop_at_the_second() -> None:
        step()
        if trainer.progress.global_step == 1:  # it counts finished steps: 1 while the second one runs
            trainer.stop_requested.set()

    monkeypatch.setattr(trainer.optimizer, "step", step_and_request_a_stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.progress.global_step == 2
    assert load_checkpoint(tmp_path / "run/last.pt")["global_step"] == 2


@pytest.mark.parametrize("every_s, saved", [(1e9, ["last.pt"]), (0.0, ["last.pt", "last.pt", "last.pt"])])
def test_last_pt_is_written_at_most_every_interval_and_after_the_last_epoch(tmp_path, tiny_camvid, monkeypatch,
                                                                            every_s, saved):
    # on a GPU an epoch takes seconds: writing last.pt and curves.png after each would take a large share
    monkeypatch.setattr(trainer_module, "CHECKPOINT_EVERY_S", every_s)
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=3))
    written: list[str] = []
    monkeypatch.setattr(trainer, "checkpoint", lambda path: written.append(path.name))
    trainer.run()
    assert written == saved
    times = [row["time_s"] for row in trainer.progress.history]
    assert len(times) == 3 and 0 < times[0] < times[1] < times[2]
    assert (tmp_path / "run/history.csv").read_text().splitlines()[0].endswith("time_s,val_miou")


def test_the_curves_name_the_lists_trained_on_and_scored_on(tmp_path, tiny_camvid, monkeypatch):
    # a figure on the drive the weights trained on and one on an unseen drive differ by 10-17 points
    drawn: list = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    config = tiny_config(tmp_path, tiny_camvid, val_list=tiny_camvid["val"], epochs=1)
    Trainer(config).run()
    loss_axis, miou_axis = drawn[-1].axes
    assert miou_axis.get_ylabel() == f"mIoU on {Path(tiny_camvid['val']).stem} (%)"
    assert loss_axis.get_title() == f"contextnet trained on {Path(tiny_camvid['train']).stem}"


def test_checkpoints_are_read_without_unpickling(tmp_path):
    torch.save({"config": {}, "payload": os.environ.__class__}, tmp_path / "evil.pt")
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.slow
def test_export_round_trip_and_val_miou_only_without_val(tmp_path, tiny_camvid):
    config = tiny_config(tmp_path, tiny_camvid, val_list=tiny_camvid["val"], epochs=1)
    trainer = Trainer(config)
    trainer.run()
    weights = export_checkpoint(tmp_path / "run/best.pt", tmp_path / "w/contextnet_tiny.safetensors")
    model, info = load_weights(weights)
    assert info.val_miou == pytest.approx(trainer.progress.best_miou) and info.splits == ["train"] and info.epochs == 1
    assert info.input_size == (360, 480) and info.classes[3].name == "Road" and info.mean == trainer.mean
    assert not any(k.startswith("aux_") for k in model.state_dict())
    trainer.model.eval().to(memory_format=torch.contiguous_format)  # it trained channels-last
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model(x))

    seen_val = tiny_config(tmp_path / "v", tiny_camvid, val_list=tiny_camvid["val"], epochs=1)
    seen_val = seen_val.updated(train_list=[tiny_camvid["train"], tiny_camvid["val"]])
    Trainer(seen_val).run()
    info = load_weights(export_checkpoint(tmp_path / "v/run/last.pt", tmp_path / "w/seen.safetensors"))[1]
    assert "val" in info.splits and info.val_miou is None


@pytest.mark.slow
def test_the_moving_average_is_what_is_validated_and_exported(tmp_path, tiny_camvid):
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, val_list=tiny_camvid["val"], epochs=1, ema_decay=0.5))
    trainer.run()
    averaged, trained = trainer.ema.module.state_dict(), trainer.model.state_dict()
    assert not torch.equal(averaged["classifier.weight"], trained["classifier.weight"])
    assert trainer.progress.history[-1]["val_miou"] == pytest.approx(
        evaluate_model(trainer.ema.module, (trainer.mean, trainer.std), trainer.val_spec, trainer.device).matrix.miou()
    )
    model, info = load_weights(export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/averaged.safetensors"))
    for name, value in model.state_dict().items():
        assert torch.equal(value, averaged[name]), name
    assert info.training["stages"][-1]["ema_decay"] == 0.5
    with pytest.raises(TrainingError, match="ema_decay must be in"):
        tiny_config(tmp_path, tiny_camvid, ema_decay=1.0)


@pytest.mark.slow
def test_seg_eval_writes_json_and_plots(tmp_path, tiny_camvid):
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=1))
    trainer.run()
    weights = export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/tiny.safetensors")
    out = tmp_path / "eval.json"
    command = [sys.executable, "-m", "seg_node.cli.eval", "--weights", str(weights)]
    command += ["--data", tiny_camvid["data"], "--list", tiny_camvid["val"], "--json", str(out)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.read_text())
    assert set(report) >= {"miou", "per_class_iou", "pixel_acc", "images", "model_fps"}
    assert report["images"] == 1 and len(report["per_class_iou"]) == 11
    assert "mIoU" in printed and "model-only fps" in printed
    assert out.with_suffix(".iou.png").stat().st_size > 0 and out.with_suffix(".examples.png").stat().st_size > 0


@pytest.mark.slow
def test_torchrun_trains_with_distributed_data_parallel(tmp_path, tiny_camvid):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    command = [
        str(torchrun), "--nproc-per-node", "2", "-m", "seg_node.cli.train",
        "--model", "cgnet", "--variant", "M3N9",
        "--data", tiny_camvid["data"], "--train-list", f"[{tiny_camvid['train']}]", "--val-list", tiny_camvid["val"],
        "--crop-size", "[64, 64]", "--batch-size", "1", "--epochs", "1", "--workers", "0", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    checkpoint = load_checkpoint(out / "last.pt")
    # 4 images over 2 processes with batch 1: 2 steps per process and epoch
    assert checkpoint["global_step"] == 2 and checkpoint["epoch"] == 1
    assert checkpoint["history"][0]["val_miou"] is not None


@pytest.mark.parametrize("seed", range(6))
def test_crop_first_augmentation_matches_resize_then_crop(camvid_root, seed):
    spec = camvid(camvid_root, "val.txt")
    image, label = spec.read(seed)
    augmentation = Augmentation((96, 128), (0.25, 2.0), True, 0.3)  # scales below 1 pad the crop
    old = augment(image, label, augmentation, 11, np.random.default_rng([seed, 0, 7]))
    new = augment_crop(image, label, augmentation, 11, np.random.default_rng([seed, 0, 7]))
    assert old[0].shape == new[0].shape == (96, 128, 3) and old[1].shape == new[1].shape == (96, 128)
    assert np.abs(old[0].astype(int) - new[0].astype(int)).mean() < 1.5
    assert (old[1] == new[1]).mean() > 0.99 and (new[1] == 11).sum() == (old[1] == 11).sum()


@pytest.mark.parametrize("seed", range(6))
def test_device_augmentation_in_torch_matches_the_cpu_path(camvid_root, seed):
    spec = camvid(camvid_root, "val.txt")
    image, label = spec.read(seed)
    for jitter in (0.0, 0.3):
        augmentation = Augmentation((96, 128), (0.25, 2.0), True, jitter)
        expected_image, expected_label = augment_crop(image, label, augmentation, 11, np.random.default_rng([seed, 1]))
        p = draw_params(np.random.default_rng([seed, 1]), augmentation, *label.shape)
        crop, crop_label = crop_sample(torch.from_numpy(image), torch.from_numpy(label), p, (96, 128), 11)
        assert crop.shape == (3, 96, 128) and crop_label.dtype == torch.int64
        assert (crop_label.numpy() == expected_label).mean() > 0.999
        difference = np.abs(crop.permute(1, 2, 0).numpy() - expected_image.astype(np.float32))
        assert difference.mean() < (1.0 if jitter == 0 else 3.0)


def test_torch_hsv_and_jitter_follow_opencv():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float()
    hsv = rgb_to_hsv(tensor)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32).transpose(2, 0, 1)
    hue_error = np.abs(hsv[0].numpy() - expected[0])
    assert np.minimum(hue_error, 180 - hue_error).max() <= 1.0 and np.abs(hsv[1:].numpy() - expected[1:]).max() <= 1.0
    torch.testing.assert_close(hsv_to_rgb(hsv), tensor, atol=1e-3, rtol=0)
    jitter = (5.0, 1.2, 0.8, 10.0)
    cv = jitter_colors_cv2(rgb, jitter).astype(np.float32)
    assert np.abs(jitter_colors_torch(tensor, jitter).permute(1, 2, 0).numpy() - cv).mean() < 2.0


def test_cached_data_path_gives_the_same_batches_and_device_batches_are_deterministic(tiny_camvid):
    from seg_node.training.data import ImageCache, TrainingSet, normalize
    from seg_node.training.device_augment import DeviceBatches

    spec = camvid(tiny_camvid["data"], [tiny_camvid["train"]])
    cache = ImageCache(spec, show_progress=False)
    assert cache.uniform and cache.images.shape == (4, 360, 480, 3) and ImageCache.fits(spec, 1.0)
    augmentation = Augmentation((64, 96), (0.5, 2.0), True, 0.2)
    from_disk, from_memory = TrainingSet(spec, augmentation, seed=3), TrainingSet(cache, augmentation, seed=3)
    for epoch in (0, 1):
        from_disk.set_epoch(epoch)
        from_memory.set_epoch(epoch)
        for index in range(4):
            for a, b in zip(from_disk[index], from_memory[index], strict=True):
                assert torch.equal(a, b)
    images = torch.stack([from_memory[i][0] for i in range(2)])
    normalized = normalize(images, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0]), channels_last=True)
    assert normalized.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(normalized[:, 2], (images[..., 2].float() - 3) / 2)

    batches = DeviceBatches(cache, augmentation, (100.0, 100.0, 100.0), (50.0, 50.0, 50.0), 3, torch.device("cpu"))
    batches.set_epoch(1)
    first, labels = batches.batch([2, 0])
    again, _ = batches.batch([2, 0])
    assert first.shape == (2, 3, 64, 96) and labels.shape == (2, 64, 96) and torch.equal(first, again)
    assert first.is_contiguous(memory_format=torch.channels_last)
    from_memory.set_epoch(1)
    cpu_image, cpu_label = from_memory[2]
    assert (labels[0] == cpu_label).float().mean() > 0.99
    assert ((first[0].permute(1, 2, 0) * 50 + 100) - cpu_image.float()).abs().mean() < 3.0
    assert len(list(batches.batches([0, 1, 2, 3], 2))) == 2


@pytest.mark.slow
def test_warm_start_from_shipped_weights_with_a_fresh_schedule(tmp_path, tiny_camvid):
    from seg_node.weights import load_weights

    shipped = Path(__file__).resolve().parents[1] / "weights/cgnet_camvid.safetensors"
    model, info = load_weights(shipped)
    config = tiny_config(
        tmp_path, tiny_camvid, model="cgnet", variant=None, optimizer="adam", lr=1e-3, init=str(shipped), max_steps=1
    )
    trainer = Trainer(config)
    for (name, a), (_, b) in zip(model.state_dict().items(), trainer.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert trainer.mean == info.mean and trainer.std == info.std
    assert trainer.progress.global_step == 0 and trainer.scheduler.get_last_lr()[0] == 1e-3
    trainer.run()
    assert trainer.progress.global_step == 1
    assert not torch.equal(model.state_dict()["classifier.weight"], trainer.model.state_dict()["classifier.weight"])
    with pytest.raises(TrainingError, match="does not fit|holds"):
        Trainer(tiny_config(tmp_path / "x", tiny_camvid, init=str(shipped)))  # ContextNet from CGNet weights


@pytest.mark.slow  # compiles a small CGNet with Inductor (about a minute on 2 cores)
def test_compiled_training_steps_and_checkpoints_hold_the_plain_model(tmp_path, tiny_camvid):
    config = tiny_config(tmp_path, tiny_camvid, model="cgnet", variant="M3N9", optimizer="adam", lr=1e-3,
                         compile=True, max_steps=2)
    trainer = Trainer(config)
    trainer.run()
    assert trainer.network is not trainer.eager_network, "still compiled after two steps"
    assert trainer.progress.global_step == 2
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model"].keys() == trainer.model.state_dict().keys()  # no "_orig_mod." prefixes


def test_when_compiling_fails_training_goes_on_uncompiled(tmp_path, tiny_camvid, monkeypatch, capsys):
    from torch._dynamo.exc import TorchDynamoException

    class NoCompiler(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda network: NoCompiler())
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, compile=True, max_steps=2))
    trainer.run()
    assert trainer.network is trainer.eager_network and trainer.progress.global_step == 2
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "torch.compile failed" in line]
    assert "No working C++ compiler" in line and "goes on uncompiled" in line


def test_the_speed_tool_is_a_script_of_the_checkout_with_its_own_options():
    tool = REPO_ROOT / "tools" / "training_speed.py"
    assert not (PACKAGE_ROOT / "seg_node" / "training" / "speed.py").exists()  # not installed with the node
    run = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--compile" in run.stdout and "python tools/training_speed.py" in run.stdout


def test_the_speed_tool_times_the_original_and_current_paths_in_one_run(tmp_path, tiny_camvid, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))  # the spawned paths' processes inherit sys.path
    from training_speed import benchmark

    config = tiny_config(tmp_path, tiny_camvid, model="cgnet", variant="M3N9", optimizer="adam", lr=1e-3, workers=1)
    result = benchmark(config, steps=2, warmup=1)
    assert list(result["paths"]) == ["original", "current"]
    for name, row in result["paths"].items():
        assert len(row["step_s"]) == 2 and row["images_per_s"] > 0 and row["data_only_images_per_s"] > 0, name
    assert result["speedup"]["original"] == 1.0
    assert result["speedup"]["current"] == result["paths"]["current"]["images_per_s"] / result["paths"]["original"][
        "images_per_s"]
    # the chip, which a machine's name alone does not tell: speed-ups differ between its generations
    assert result["processor"].endswith(f", {os.cpu_count()} cores") and "family" in result["processor"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_freed_memory_is_reused_without_page_faults():
    # a training step's pattern: a stack of large activations allocated, then all freed; in a child
    # process, as the setting holds for the whole process. The kept heap reaches its high-water mark within
    # three steps (the small allocations between the large blocks shift where the blocks land, so the second
    # and third steps may still grow it by 16-96 MiB); from the fourth on, 30 runs of 10 steps faulted 0 pages
    code = """
import resource, sys, torch
from seg_node.training.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():
    activations = [torch.empty(mib * 2**18).fill_(1.0) for mib in (48, 8, 36, 48, 4, 16)]
    del activations
for _ in range(4):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", code, mode], check=True, capture_output=True, text=True).stdout
        kept, faults[mode] = out.split()
        assert kept == str(mode == "keep")
    pages = 4 * (48 + 8 + 36 + 48 + 4 + 16) * 2**20 // resource.getpagesize()
    assert int(faults["default"]) > pages // 2, faults  # malloc gave the large blocks back and faults them in again
    assert int(faults["keep"]) < pages // 20, faults
