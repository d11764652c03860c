"""What weights were trained on: stages carried through --init, their drives, twins, and the shipped JSONs' honesty."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import tiny_config

from seg_node.training.checkpoint import export_checkpoint, load_checkpoint, validated_miou
from seg_node.training.config import TrainingError
from seg_node.training.lineage import earlier_stages, lineage, record_twin, validation_unseen
from seg_node.training.trainer import Trainer
from seg_node.weights import SegClass, WeightsInfo, read_info

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.safetensors"))


def stage(splits: list[str], lr: float = 0.01, steps: int = 10, hardware: str = "2-core x86_64 CPU") -> dict:
    return {"splits": splits, "optimizer": "rmsprop", "lr": lr, "batch_size": 16, "crop_size": [360, 360],
            "planned_epochs": 30, "epochs": 30, "steps": steps, "hardware": [hardware]}


def weights_info(stages: list[dict], best_miou: float | None) -> WeightsInfo:
    splits, val_miou, training = lineage(stages, best_miou)
    return WeightsInfo("contextnet", {"context_scale": 4, "width": 1.0}, [SegClass(0, "Sky", (1, 2, 3))],
                       (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (360, 480), "camvid", splits, val_miou=val_miou,
                       training=training)


def test_weights_saw_every_split_of_every_stage_and_state_val_miou_only_without_val():
    info = weights_info([stage(["train"]), stage(["train", "val"], steps=5, hardware="H100 GPU")], 0.6)
    assert info.splits == ["train", "val"] and info.val_miou is None
    assert info.training["total_steps"] == 15 and info.training["hardware"] == ["2-core x86_64 CPU", "H100 GPU"]
    assert weights_info([stage(["train"]), stage(["train"])], 0.6).val_miou == 0.6
    # a JSON from before stages were recorded is one stage with the file's splits and hardware
    old = WeightsInfo("cgnet", {}, [], (0,) * 3, (1,) * 3, (1, 1), "camvid", ["train"],
                      training={"lr": 1e-3, "steps": 7, "hardware": "a CPU"})
    assert earlier_stages(old) == [{"lr": 1e-3, "steps": 7, "hardware": ["a CPU"], "splits": ["train"]}]


def test_a_twin_must_be_the_same_recipe_without_the_validation_frames():
    shipped = weights_info([stage(["train"]), stage(["train", "val"])], None)
    twin = weights_info([stage(["train"]), stage(["train"])], 0.58)
    record_twin(shipped, twin, "contextnet_camvid_train")
    assert shipped.training["twin"]["weights"] == "contextnet_camvid_train"
    assert shipped.training["twin"]["val_miou"] == 0.58 and shipped.training["twin"]["val_list"] == "val.txt"

    fresh = weights_info([stage(["train"]), stage(["train", "val"])], None)
    with pytest.raises(TrainingError, match="stage 2 .* another recipe: lr 0.01 vs 0.02"):
        record_twin(fresh, weights_info([stage(["train"]), stage(["train"], lr=0.02)], 0.5), "x")
    with pytest.raises(TrainingError, match="1 training stages, these weights 2"):
        record_twin(fresh, weights_info([stage(["train"])], 0.5), "x")
    with pytest.raises(TrainingError, match="it is no twin"):
        record_twin(fresh, copy.deepcopy(fresh), "x")
    with pytest.raises(TrainingError, match="need no twin"):
        record_twin(twin, twin, "x")


def test_a_figure_on_a_drive_is_stated_only_when_no_stage_trained_on_that_drive():
    def drives_stage(splits: list[str], drives: list[str] | None) -> dict:
        return stage(splits) | {"drives": drives}

    twin = [drives_stage(["drive_0001TP", "drive_0016E5"], ["0001TP", "0016E5"])]
    assert validation_unseen(twin, "configs/splits/camvid/drive_0006R0.txt", ["0006R0"])
    assert not validation_unseen(twin, "val.txt", ["0016E5"]), "val is drive 0016E5, which the twin trained on"
    everything = [drives_stage(["train", "val"], ["0001TP", "0006R0", "0016E5"])]
    assert not validation_unseen(everything, "drive_0006R0.txt", ["0006R0"])
    assert not validation_unseen(twin, "", None), "weights trained without a validation list were scored on nothing"
    # a stage that does not record its drives (a JSON from before drives, or a teacher's) may have seen any of them
    assert not validation_unseen([*twin, drives_stage(["train"], None)], "drive_0006R0.txt", ["0006R0"])
    assert not validation_unseen([twin[0] | {"teacher_splits": ["train"]}], "drive_0006R0.txt", ["0006R0"])
    # a teacher's drives count as seen
    taught = twin[0] | {"teacher_splits": ["drive_0001TP"], "teacher_drives": ["0001TP"]}
    assert validation_unseen([taught], "drive_0006R0.txt", ["0006R0"])
    assert not validation_unseen([taught | {"teacher_drives": ["0006R0"]}], "drive_0006R0.txt", ["0006R0"])
    splits, miou, training = lineage(twin, 0.61, "drive_0006R0.txt", ["0006R0"])
    assert miou == 0.61 and training["drives"] == ["0001TP", "0016E5"] and training["val_drives"] == ["0006R0"]


def test_exported_val_miou_is_that_of_the_checkpoints_own_weights():
    history = [{"epoch": 1, "val_miou": 0.5}, {"epoch": 2, "val_miou": 0.4}]
    best = {"epoch": 1, "step_in_epoch": 0, "history": history[:1], "best_miou": 0.5}
    last = {"epoch": 2, "step_in_epoch": 0, "history": history, "best_miou": 0.5}
    assert validated_miou(best) == 0.5 and validated_miou(last) == 0.4  # not the best so far
    assert validated_miou(last | {"epoch": 3}) is None  # an epoch without validation
    assert validated_miou(last | {"step_in_epoch": 3}) is None  # Ctrl-C mid-epoch: moved on since


@pytest.mark.slow
def test_a_warm_started_run_exports_all_stages_and_names_its_twin(tmp_path, tiny_camvid):
    val = tiny_camvid["val"]
    first = tiny_config(tmp_path / "first", tiny_camvid, val_list=val, epochs=1)
    Trainer(first).run()
    first_weights = export_checkpoint(tmp_path / "first/run/best.pt", tmp_path / "w/first.safetensors")

    def second(folder: str, train_list: list[str], val_list: str) -> Path:
        config = tiny_config(tmp_path / folder, tiny_camvid, init=str(first_weights), train_list=train_list,
                             val_list=val_list, epochs=1)
        Trainer(config).run()
        return tmp_path / folder / "run" / ("best.pt" if val_list else "last.pt")

    twin = export_checkpoint(second("twin", [tiny_camvid["train"]], val), tmp_path / "w/tiny_train.safetensors")
    with_val = second("both", [tiny_camvid["train"], val], "")
    assert load_checkpoint(with_val)["earlier_stages"] == read_info(first_weights).training["stages"]
    shipped = read_info(export_checkpoint(with_val, tmp_path / "w/tiny.safetensors", twin=twin))
    first_stage, this = shipped.training["stages"]
    assert first_stage == read_info(first_weights).training["stages"][0] and first_stage["splits"] == ["train"]
    assert this["splits"] == ["train", "val"] and this["init"] == "first" and this["epochs"] == 1
    assert this["hardware"] and this["steps"] == 2 and shipped.epochs == 2 and shipped.val_miou is None
    assert shipped.training["twin"] == {
        "weights": "tiny_train", "val_list": val, "val_drives": read_info(twin).training["val_drives"],
        "val_miou": read_info(twin).val_miou, "note": shipped.training["twin"]["note"],
    }
    resumed = Trainer(tiny_config(tmp_path / "both", tiny_camvid, epochs=2), resume=str(with_val))
    assert resumed.provenance["earlier_stages"] == read_info(first_weights).training["stages"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_shipped_json_states_splits_stages_hardware_and_the_twin(path):
    info = read_info(path)
    stages = info.training["stages"]
    assert all(stage["splits"] and stage["hardware"] for stage in stages), "every stage says its splits and hardware"
    assert info.splits == lineage(stages, None)[0], "the top-level splits are every stage's"
    unseen = validation_unseen(stages, info.val_list or "", info.training.get("val_drives"))
    if unseen:
        assert info.val_miou is not None
        return
    assert info.val_miou is None, "weights that trained on their validation frames state no mIoU of their own"
    recorded = info.training["twin"]
    twin = read_info(WEIGHTS / f"{recorded['weights']}.safetensors")
    assert (recorded["val_miou"], recorded["val_list"]) == (twin.val_miou, twin.val_list)
    record_twin(copy.deepcopy(info), twin, recorded["weights"])  # raises unless the recipes match


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in SHIPPED if read_info(p).val_miou is not None], ids=lambda p: p.stem)
def test_seg_eval_reproduces_the_figure_each_card_states(path, camvid_root, tmp_path):
    """On the list the card names: val.txt, or the drive the weights never trained on (configs/splits/camvid)."""
    info = read_info(path)
    report = tmp_path / "eval.json"
    command = [sys.executable, "-m", "seg_node.cli.eval", "--weights", str(path), "--data", str(camvid_root)]
    subprocess.run([*command, "--list", info.val_list, "--json", str(report)], check=True, capture_output=True,
                   cwd=WEIGHTS.parent)
    assert 100 * json.loads(report.read_text())["miou"] == pytest.approx(100 * info.val_miou, abs=0.2)


def test_a_warm_start_with_the_seed_of_the_stage_before_it_is_told_that_it_draws_the_same_crops(
    tmp_path, tiny_camvid, capsys
):
    Trainer(tiny_config(tmp_path, tiny_camvid, epochs=1, seed=3)).run()
    first = export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/first.safetensors")
    assert read_info(first).training["stages"][-1]["seed"] == 3
    capsys.readouterr()
    Trainer(tiny_config(tmp_path, tiny_camvid, init=str(first), seed=3, out=str(tmp_path / "again")))
    assert "first.safetensors's last stage trained with seed 3 too" in capsys.readouterr().out
    Trainer(tiny_config(tmp_path, tiny_camvid, init=str(first), seed=4, out=str(tmp_path / "fresh")))
    assert "seed" not in capsys.readouterr().out
