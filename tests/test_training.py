"""The offline trainer and evaluator: data sets, class weights, the poly schedule, exact resume, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_node.datasets import (
    CITYSCAPES_IGNORE,
    DatasetError,
    camvid,
    cityscapes,
    enet_class_weights,
    image_folder,
    label_histogram,
)
from seg_node.training.trainer import DEFAULTS, Trainer, TrainingError, export_checkpoint, load_checkpoint, load_config
from seg_node.weights import load_weights


@pytest.fixture
def tiny_camvid(tmp_path, camvid_root) -> dict[str, str]:
    """Four CamVid train frames and one val frame as list files in tmp_path."""
    train = (camvid_root / "train.txt").read_text().splitlines()[:4]
    val = (camvid_root / "val.txt").read_text().splitlines()[:1]
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
    return {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt"), "data": str(camvid_root)}


def tiny_config(tmp_path: Path, tiny_camvid: dict[str, str], **overrides) -> dict:
    config = load_config(None, {})
    config.update(
        model="contextnet",
        dropout=0.1,
        aux_weight=0.4,
        data=tiny_camvid["data"],
        train_list=[tiny_camvid["train"]],
        val_list="",
        crop_size=[64, 64],
        batch_size=2,
        epochs=2,
        workers=0,
        out=str(tmp_path / "run"),
        optimizer="rmsprop",
        lr=0.01,
        eps=1.0,
        class_weighting="enet",
    )
    config.update(overrides)
    return config


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
    assert cgnet["optimizer"] == "adam" and cgnet["lr"] == 0.002 and cgnet["crop_size"] == [360, 360]
    assert cgnet["poly_power"] == 0.9 and cgnet["weight_decay"] == 5e-4 and cgnet["batch_size"] == 8
    context = load_config(repo / "configs/contextnet_camvid.yaml", {})
    assert (context["optimizer"], context["lr"], context["eps"], context["poly_power"]) == ("rmsprop", 0.045, 1.0, 0.98)
    assert context["aux_weight"] == 0.4 and context["rms_decay"] == 0.9 and context["momentum"] == 0.9
    for name in ("cgnet_cityscapes", "contextnet_cityscapes"):
        assert load_config(repo / f"configs/{name}.yaml", {})["dataset"] == "cityscapes"
    (tmp_path / "typo.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(TrainingError, match="unknown keys"):
        load_config(tmp_path / "typo.yaml", {})
    assert set(DEFAULTS) >= {"lr", "epochs", "crop_size", "aux_weight"}


def test_poly_schedule_decays_per_iteration(tmp_path, tiny_camvid):
    trainer = Trainer(
        tiny_config(tmp_path, tiny_camvid, model="cgnet", variant="M3N9", optimizer="adam", lr=1e-3, max_steps=3)
    )
    trainer.run()
    total = trainer.steps_per_epoch * 2
    assert trainer.global_step == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 3 / total) ** 0.9)


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, tiny_camvid):
    torch.set_num_threads(1)
    straight = Trainer(tiny_config(tmp_path / "a", tiny_camvid))
    straight.run()

    interrupted = Trainer(tiny_config(tmp_path / "b", tiny_camvid, max_steps=1))
    interrupted.run()
    assert interrupted.step_in_epoch == 1
    resumed = Trainer(tiny_config(tmp_path / "b", tiny_camvid), resume=str(tmp_path / "b/run/last.pt"))
    assert resumed.global_step == 1
    resumed.run()

    assert resumed.global_step == straight.global_step == 4
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [row["loss"] for row in resumed.history] != []


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_camvid):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "seg_node.training.trainer",
        "--model", "cgnet", "--variant", "M3N9",
        "--data", tiny_camvid["data"], "--train-list", f"[{tiny_camvid['train']}]", "--val-list", "''",
        "--crop-size", "[64, 64]", "--batch-size", "2", "--epochs", "1000", "--workers", "0", "--out", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1:"):
            break
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and "--resume" in output
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["global_step"] >= 2


def test_checkpoints_are_read_without_unpickling(tmp_path):
    torch.save({"config": {}, "payload": os.environ.__class__}, tmp_path / "evil.pt")
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_export_round_trip_and_val_miou_only_without_val(tmp_path, tiny_camvid):
    config = tiny_config(tmp_path, tiny_camvid, val_list=tiny_camvid["val"], epochs=1)
    trainer = Trainer(config)
    trainer.run()
    weights = export_checkpoint(tmp_path / "run/best.pt", tmp_path / "w/contextnet_tiny.safetensors")
    model, info = load_weights(weights)
    assert info.val_miou == pytest.approx(trainer.best_miou) and info.splits == ["train"] and info.epochs == 1
    assert info.input_size == (360, 480) and info.classes[3].name == "Road" and info.mean == trainer.mean
    assert not any(k.startswith("aux_") for k in model.state_dict())
    trainer.model.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model(x))

    seen_val = tiny_config(tmp_path / "v", tiny_camvid, val_list=tiny_camvid["val"], epochs=1)
    seen_val["train_list"] = [tiny_camvid["train"], tiny_camvid["val"]]
    Trainer(seen_val).run()
    info = load_weights(export_checkpoint(tmp_path / "v/run/last.pt", tmp_path / "w/seen.safetensors"))[1]
    assert "val" in info.splits and info.val_miou is None


def test_seg_eval_writes_json_and_plots(tmp_path, tiny_camvid):
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=1))
    trainer.run()
    weights = export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/tiny.safetensors")
    out = tmp_path / "eval.json"
    command = [sys.executable, "-m", "seg_node.evaluation.evaluate", "--weights", str(weights)]
    command += ["--data", tiny_camvid["data"], "--list", tiny_camvid["val"], "--json", str(out)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.read_text())
    assert set(report) >= {"miou", "per_class_iou", "pixel_acc", "images", "model_fps"}
    assert report["images"] == 1 and len(report["per_class_iou"]) == 11
    assert "mIoU" in printed and "model-only fps" in printed
    assert out.with_suffix(".iou.png").stat().st_size > 0 and out.with_suffix(".examples.png").stat().st_size > 0


def test_torchrun_trains_with_distributed_data_parallel(tmp_path, tiny_camvid):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    command = [
        str(torchrun), "--nproc-per-node", "2", "-m", "seg_node.training.trainer",
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
