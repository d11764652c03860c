"""Weights files: save/load round trip, mismatches named, nothing unpickled."""

from __future__ import annotations

import json

import pytest
import torch

from seg_node.models import ModelArgumentError, build_model
from seg_node.weights import (
    SegClass,
    WeightsError,
    WeightsInfo,
    WeightsMismatchError,
    find_weights,
    load_state,
    load_weights,
    parse_safetensors,
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
    assert "same-drive figure" in training_note(info, "val")["note"], "val is drive 0016E5, which train.txt holds"
    info.splits, info.training = ["drive_0001TP", "drive_0006R0"], {"drives": ["0001TP", "0006R0"]}
    assert "same-drive" not in training_note(info, "val")["note"]
    info.splits = ["train", "val"]
    seen = training_note(info, "val")
    assert seen["saw_these_frames"] is True and "not a figure on unseen frames" in seen["note"]
    assert training_note(info, None)["saw_these_frames"] is None


def _card(tmp_path, **changes):
    """A small valid weights file whose JSON gets ``changes`` (None removes a field), as a user might damage it."""
    path = save_weights(
        build_model("cgnet", 3, m=2, n=2), _info("cgnet", {"m": 2, "n": 2}, 3), tmp_path / "w.safetensors"
    )
    card = json.loads(path.with_suffix(".json").read_text())
    for key, value in changes.items():
        if value is None:
            del card[key]
        else:
            card[key] = value
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"variant": {"m": 2, "n": 2, "bogus": 1}}, r"variant.*'bogus'"),
        ({"variant": {"m": 2, "n": 100000}}, r"variant.*n=100000 is not an integer from 1 to 64"),
        ({"variant": {"m": 2.5, "n": 2}}, r"variant.*m=2.5"),
        ({"variant": "M3N21"}, r"field 'variant' is malformed"),
        ({"mean": "abc"}, r"field 'mean' is \['a', 'b', 'c'\], not three finite numbers"),
        ({"mean": 7}, r"field 'mean' is malformed"),
        ({"mean": [1.0, 2.0]}, r"field 'mean'"),
        ({"std": [0, 0, 0]}, r"field 'std' is \[0, 0, 0\], not three finite positive numbers"),
        ({"std": [60, float("nan"), 60]}, r"field 'std'"),
        ({"input_size": [0, 0]}, r"field 'input_size' is \[0, 0\]"),
        ({"input_size": [100000, 480]}, r"field 'input_size'"),
        ({"architecture": "unet"}, r"field 'architecture' is 'unet'"),
        ({"classes": []}, r"field 'classes' is empty"),
        ({"classes": ["sky"]}, r"field 'classes' is malformed"),
        ({"ignore_index": 300}, r"field 'ignore_index'"),
        ({"std": None}, r"field 'std' is missing"),
    ],
)
def test_a_damaged_card_names_the_field_and_the_file(tmp_path, changes, named):
    path = _card(tmp_path, **changes)
    with pytest.raises(WeightsError, match=rf"w\.json: .*{named}") as raised:
        load_weights(path)
    assert "\n" not in str(raised.value)


def test_an_absurd_variant_is_refused_before_anything_is_built():
    with pytest.raises(ModelArgumentError, match="n=100000"):
        build_model("cgnet", 11, n=100000)
    with pytest.raises(ModelArgumentError, match=r"cgnet takes no argument 'bogus'; it takes m, n, dropout"):
        build_model("cgnet", 11, bogus=1)
    with pytest.raises(ModelArgumentError, match="width"):
        build_model("contextnet", 11, width=float("inf"))
    with pytest.raises(ModelArgumentError, match="1 to 256 classes"):
        build_model("contextnet", 0)
    assert build_model("cgnet", 3, m=2.0, n=2).variant == {"m": 2, "n": 2}  # JSON numbers such as 2.0 are integers


def test_seg_eval_names_the_field_and_the_file_in_one_line(tmp_path, capsys):
    from seg_node.cli.eval import main

    path = _card(tmp_path, variant={"m": 2, "n": 2, "bogus": 1})
    assert main(["--weights", str(path), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "w.json" in err and "'bogus'" in err and "Traceback" not in err


def test_the_built_in_reader_reads_the_shipped_weights_as_safetensors_does(tmp_path):
    from safetensors.torch import load_file

    for name in ("cgnet", "contextnet"):
        path = find_weights(f"{name}_camvid")
        ours, theirs = parse_safetensors(path), load_file(str(path))
        assert ours.keys() == theirs.keys()
        assert all(ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]) for key in ours)


def test_without_safetensors_the_weights_load_alike_and_damage_is_named(tmp_path, monkeypatch):
    import seg_node.weights as weights

    path = _card(tmp_path)
    expected = weights.read_tensors(path)
    monkeypatch.setattr(weights, "_safetensors_load_file", lambda: None)
    assert weights.tensor_reader().startswith("built-in reader")
    ours = weights.read_tensors(path)
    assert ours.keys() == expected.keys() and all(torch.equal(ours[k], expected[k]) for k in ours)
    model, _ = load_weights(path)
    assert not model.training
    good = path.read_bytes()
    for damaged, reason in (
        (good[:5], "shorter than its 8-byte header"),
        (b"\xff" * 8 + good[8:], "its header claims"),
        (good[:8] + b"x" + good[9:], "not JSON"),
        (good[: len(good) - 10], "do not fit"),
    ):
        path.write_bytes(damaged)
        with pytest.raises(WeightsError, match=reason):
            load_weights(path)
