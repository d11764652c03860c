"""Weights files: save/load round trip, mismatches named, nothing unpickled."""

from __future__ import annotations

import json

import pytest
import torch

from seg_node.models import build_model
from seg_node.weights import (
    SegClass,
    WeightsError,
    WeightsInfo,
    WeightsMismatchError,
    find_weights,
    load_state,
    load_weights,
    save_weights,
    training_note,
)


def _info(architecture: str, variant: dict, classes: int) -> WeightsInfo:
    return WeightsInfo(
        architecture=architecture,
        variant=variant,
        classes=[SegClass(i, f"class{i}", (i, 2 * i, 3 * i)) for i in range(classes)],
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 60.0, 60.0),
        input_size=(96, 128),
        dataset="unit-test",
        splits=["train"],
    )


@pytest.mark.parametrize(
    ("name", "variant"), [("cgnet", {"m": 3, "n": 21}), ("contextnet", {"context_scale": 4, "width": 1.0})]
)
def test_round_trip_gives_identical_outputs(tmp_path, name, variant):
    torch.manual_seed(0)
    model = build_model(name, 5, aux_classifier=True) if name == "contextnet" else build_model(name, 5)
    model.eval()
    path = save_weights(model, _info(name, variant, 5), tmp_path / f"{name}.safetensors")
    loaded, info = load_weights(path)
    assert info.num_classes == 5 and info.architecture == name
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert json.loads(path.with_suffix(".json").read_text())["num_classes"] == 5


def test_wrong_architecture_or_class_count_names_both(tmp_path):
    path = save_weights(build_model("cgnet", 11), _info("cgnet", {"m": 3, "n": 21}, 11), tmp_path / "w.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"cgnet \(m=3, n=21\) with 11 classes.*contextnet.*with 11"):
        load_state(build_model("contextnet", 11), path)
    with pytest.raises(WeightsMismatchError, match=r"with 11 classes.*with 19 classes"):
        load_state(build_model("cgnet", 19), path)


def test_missing_json_and_damaged_tensors_are_clear_errors(tmp_path):
    path = save_weights(
        build_model("cgnet", 3, m=2, n=2), _info("cgnet", {"m": 2, "n": 2}, 3), tmp_path / "w.safetensors"
    )
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="needs its JSON"):
        load_weights(path)
    with pytest.raises(WeightsError, match="does not exist"):
        find_weights(str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsError, match="no weights named 'nonexistent'"):
        find_weights("nonexistent")


def test_tensors_of_another_model_than_the_json_says_are_a_mismatch(tmp_path):
    path = save_weights(build_model("cgnet", 11), _info("cgnet", {"m": 3, "n": 21}, 11), tmp_path / "w.safetensors")
    original = json.loads(path.with_suffix(".json").read_text())
    deeper = original | {"variant": {"m": 3, "n": 15}}  # the JSON now names another CGNet over M3N21 tensors
    path.with_suffix(".json").write_text(json.dumps(deeper))
    with pytest.raises(WeightsMismatchError, match=r"w.safetensors does not fit cgnet \(m=3, n=15\) with 11 classes"):
        load_weights(path)
    fewer = original | {"classes": original["classes"][:5]}  # 5 classes over 11-class tensors
    path.with_suffix(".json").write_text(json.dumps(fewer))
    with pytest.raises(WeightsMismatchError, match=r"w.safetensors does not fit cgnet \(m=3, n=21\) with 5 classes"):
        load_weights(path)


def test_training_note_says_whether_the_scored_frames_were_seen():
    info = _info("cgnet", {"m": 3, "n": 21}, 11)
    info.dataset, info.splits = "camvid", ["train"]
    assert training_note(info, "val")["saw_these_frames"] is False
    assert "unseen" in training_note(info, "val")["note"]
    info.splits = ["train", "val"]
    seen = training_note(info, "val")
    assert seen["saw_these_frames"] is True and "not a figure on unseen frames" in seen["note"]
    assert training_note(info, None)["saw_these_frames"] is None
