"""seg-split-drives: CamVid's lists split by the drive each frame was filmed on; the recipes' lists are its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from seg_node.cli.split_drives import main as split_drives
from seg_node.datasets import DatasetError, drive_of, lines_by_drive

SPLITS = REPO_ROOT / "configs" / "splits" / "camvid"


def test_drive_of_reads_the_prefix() -> None:
    assert drive_of("train/0006R0_f02400.jpg") == "0006R0"
    assert drive_of(Path("val/0016E5_07959.jpg")) == "0016E5"
    with pytest.raises(DatasetError, match="names no drive"):
        drive_of("train/frame0001.jpg")


def test_camvid_has_three_drives_and_val_is_one_of_them(camvid_root: Path) -> None:
    by_drive = lines_by_drive(camvid_root, ["train.txt", "val.txt"])
    assert {drive: len(lines) for drive, lines in by_drive.items()} == {"0001TP": 62, "0006R0": 101, "0016E5": 305}
    val_images = {line.split()[0] for line in (camvid_root / "val.txt").read_text().splitlines() if line.strip()}
    assert {drive_of(image) for image in val_images} == {"0016E5"}
    assert val_images <= {line.split()[0] for line in by_drive["0016E5"]}


def test_the_committed_lists_are_the_tools_output(camvid_root: Path, tmp_path: Path, capsys) -> None:
    assert split_drives(["--data", str(camvid_root), "--out", str(tmp_path)]) == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(path.name for path in SPLITS.glob("drive_*.txt")) == [
        "drive_0001TP.txt", "drive_0006R0.txt", "drive_0016E5.txt"]
    for name in written:
        assert (tmp_path / name).read_text() == (SPLITS / name).read_text(), f"{name} differs: rerun seg-split-drives"
    assert "0006R0          101" in capsys.readouterr().out


def test_classes_gives_each_class_share_of_each_drive_and_its_frames(camvid_root: Path, tmp_path: Path,
                                                                     capsys) -> None:
    assert split_drives(["--data", str(camvid_root), "--out", str(tmp_path), "--classes"]) == 0
    table = capsys.readouterr().out.split("class support by drive")[1].splitlines()[1:]
    rows = {line.split()[0]: line.split()[1:] for line in table if line.strip()}
    assert rows["class"] == ["0001TP", "0006R0", "0016E5"]
    # the unseen drive's rarest class: 0.07% of its labelled pixels, in 14 of its 101 frames
    assert rows["Bicyclist"] == ["0.56%", "47/62", "0.07%", "14/101", "0.98%", "241/305"]
    assert rows["Fence"][:2] == ["0.44%", "13/62"]
    shares = [float(row[column].rstrip("%")) for row in rows.values() if row[0].endswith("%") for column in (0, 2, 4)]
    assert len(shares) == 11 * 3 and sum(shares) == pytest.approx(300.0, abs=0.1)


def test_no_frame_is_in_two_drives_and_none_is_lost(camvid_root: Path) -> None:
    lines = [line for path in SPLITS.glob("drive_*.txt") for line in path.read_text().splitlines()]
    listed = [line for name in ("train.txt", "val.txt") for line in (camvid_root / name).read_text().splitlines()]
    assert sorted(lines) == sorted(line for line in listed if line.strip())


def test_a_frame_listed_twice_is_refused_with_its_lists(camvid_root: Path, tmp_path: Path, capsys) -> None:
    first = (camvid_root / "val.txt").read_text().splitlines()[0]
    twice = tmp_path / "twice.txt"
    twice.write_text(first + "\n")
    status = split_drives(["--data", str(camvid_root), "--lists", "val.txt", str(twice), "--out", str(tmp_path / "o")])
    assert status == 1
    message = capsys.readouterr().err
    assert "is listed twice" in message and "val.txt" in message and "twice.txt" in message


@pytest.mark.parametrize("recipe", ["cgnet_camvid", "contextnet_camvid"])
def test_the_camvid_recipes_validate_on_a_drive_they_do_not_train_on(recipe: str) -> None:
    from seg_node.training.config import load_config

    config = load_config(REPO_ROOT / "configs" / f"{recipe}.yaml", {})
    assert [Path(name).name for name in config.train_list] == ["drive_0001TP.txt", "drive_0016E5.txt"]
    assert Path(config.val_list).name == "drive_0006R0.txt"
    assert all((REPO_ROOT / name).is_file() for name in [*config.train_list, config.val_list])


def test_seg_eval_by_drive_scores_each_drive_and_the_drives_add_up(camvid_root: Path, weights_path, tmp_path: Path,
                                                                    capsys) -> None:
    from seg_node.cli.eval import main as seg_eval

    lines = [(SPLITS / f"drive_{drive}.txt").read_text().splitlines()[0] for drive in ("0001TP", "0006R0")]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("\n".join(lines) + "\n")
    report = tmp_path / "eval.json"
    status = seg_eval(["--weights", str(weights_path("cgnet")), "--data", str(camvid_root), "--list", str(mixed),
                       "--by-drive", "--json", str(report)])
    assert status == 0
    scores = json.loads(report.read_text())
    assert sorted(scores["drives"]) == ["0001TP", "0006R0"]
    assert [scores["drives"][drive]["images"] for drive in ("0001TP", "0006R0")] == [1, 1]
    assert scores["images"] == 2
    assert "drive 0006R0: mIoU" in capsys.readouterr().out
