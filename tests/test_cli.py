"""The console scripts: --help shows every option's default; bad input is one line and an exit status, no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PACKAGE_ROOT

from seg_node.cli import EXIT_FAILURE, EXIT_USAGE
from seg_node.cli import bench as bench_cli
from seg_node.cli import demo as demo_cli
from seg_node.cli import eval as eval_cli
from seg_node.cli import healthcheck as healthcheck_cli
from seg_node.cli import make_bag as make_bag_cli
from seg_node.cli import measure as measure_cli
from seg_node.cli import replay as replay_cli
from seg_node.cli import split_drives as split_drives_cli
from seg_node.recording.make_bag import make_bag

SCRIPTS = {
    "seg-eval": (eval_cli, ["--backend", "default: torch", "--precision", "default: fp32", "--list", "val.txt"]),
    "seg-replay": (replay_cli, ["--backend", "default: auto", "--out", "out/replay", "--network-size"]),
    "seg-make-bag": (make_bag_cli, ["--rate", "default: 10.0", "--storage", "mcap"]),
    "seg-demo": (demo_cli, ["--backend", "--model", "default: cgnet", "--idle", "default: 3.0"]),
    "seg-bench": (bench_cli, ["--backends", "torch-cpu", "--threads", "default: unset", "--engine-cache-dir"]),
    "seg-healthcheck": (healthcheck_cli, ["--timeout", "default: 5.0", "/diagnostics"]),
    "seg-measure": (measure_cli, ["node", "dds"]),
    "seg-split-drives": (split_drives_cli, ["--data", "--out", "default: ['train.txt', 'val.txt']"]),
}


def one_line_error(capsys: pytest.CaptureFixture, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("prog", SCRIPTS)
def test_help_lists_every_option_with_its_default(prog, capsys):
    module, expected = SCRIPTS[prog]
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"usage: {prog}" in text
    for needle in expected:
        assert needle in text, f"{prog} --help lacks {needle!r}"
    assert not re.search(r"\(default: [^)]*\) \(default: ", text), f"{prog} --help shows a default twice"
    assert "(default: None)" not in text  # None is shown as unset


def test_console_scripts_point_at_the_cli_modules():
    setup = (PACKAGE_ROOT / "setup.py").read_text()
    for prog in SCRIPTS:
        assert f'"{prog} = seg_node.cli.{prog.removeprefix("seg-").replace("-", "_")}:main"' in setup


def test_seg_eval_names_a_bad_list_and_a_missing_class_table(tmp_path, camvid_root, capsys):
    assert eval_cli.main(["--data", str(camvid_root), "--list", "nope.txt"]) == EXIT_FAILURE
    assert "nope.txt" in one_line_error(capsys, "seg-eval")
    bad = tmp_path / "bad.txt"
    bad.write_text("only-one-column.png\n")
    assert eval_cli.main(["--data", str(camvid_root), "--list", str(bad)]) == EXIT_FAILURE
    assert "expected 'image label'" in one_line_error(capsys, "seg-eval")
    assert eval_cli.main(["--data", str(tmp_path), "--format", "folder"]) == EXIT_USAGE
    assert "--classes" in one_line_error(capsys, "seg-eval")


def test_seg_eval_reports_the_engine_it_ran(tmp_path, camvid_root, capsys):
    listing = tmp_path / "one.txt"
    listing.write_text((camvid_root / "val.txt").read_text().splitlines()[0] + "\n")
    out = tmp_path / "eval.json"
    command = ["--data", str(camvid_root), "--list", str(listing), "--device", "cpu", "--threads", "1"]
    assert eval_cli.main([*command, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 1 and report["backend"] == "torch" and report["device"] == "cpu"
    assert "mIoU" in capsys.readouterr().out


def test_seg_eval_network_size_scores_the_masks_of_a_node_at_that_size(tmp_path, camvid_root, capsys):
    """--network-size runs the network at the node's size and scores labels brought back to the image's size:
    at the image's own size it is the default figure; at a quarter of it, another (coarser) one."""
    listing = tmp_path / "one.txt"
    listing.write_text((camvid_root / "val.txt").read_text().splitlines()[0] + "\n")
    command = ["--data", str(camvid_root), "--list", str(listing), "--device", "cpu", "--threads", "1"]
    reports = {}
    for name, flags in (("default", []), ("same", ["--network-size", "360", "480"]),
                        ("quarter", ["--network-size", "90", "120"])):
        out = tmp_path / f"{name}.json"
        assert eval_cli.main([*command, *flags, "--json", str(out)]) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["default"]["network_size"] is None and reports["quarter"]["network_size"] == [90, 120]
    assert reports["same"]["miou"] == reports["default"]["miou"]
    assert reports["quarter"]["miou"] != reports["default"]["miou"]
    assert "network input 90x120" in capsys.readouterr().out
    assert eval_cli.main([*command, "--network-size", "90", "120", "--flip"]) == EXIT_USAGE
    assert "--network-size" in one_line_error(capsys, "seg-eval")


def test_seg_eval_names_missing_weights(tmp_path, camvid_root, capsys):
    missing = tmp_path / "none.safetensors"
    assert eval_cli.main(["--weights", str(missing), "--data", str(camvid_root)]) == EXIT_FAILURE
    assert "none" in one_line_error(capsys, "seg-eval")


def test_seg_replay_names_missing_weights_and_bags(tmp_path, camvid_pairs, capsys):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:1], progress=False)
    missing = str(tmp_path / "none.safetensors")
    common = ["--image-topic", "/camera/image_raw/compressed", "--out", str(tmp_path / "out"), "--no-bag"]
    assert replay_cli.main([str(bag), "--weights", missing, *common]) == EXIT_FAILURE
    assert "none" in one_line_error(capsys, "seg-replay")
    assert replay_cli.main([str(tmp_path / "no_bag"), *common]) == EXIT_FAILURE
    assert "does not exist" in one_line_error(capsys, "seg-replay")


def test_seg_make_bag_names_a_bad_list_and_an_empty_slice(tmp_path, camvid_root, capsys):
    assert make_bag_cli.main([str(tmp_path / "a"), "--list", str(tmp_path / "nope.txt")]) == EXIT_FAILURE
    assert "nope.txt" in one_line_error(capsys, "seg-make-bag")
    listing = str(camvid_root / "val.txt")
    assert make_bag_cli.main([str(tmp_path / "b"), "--list", listing, "--first", "100000"]) == EXIT_USAGE
    assert "--first" in one_line_error(capsys, "seg-make-bag")
    assert make_bag_cli.main([str(tmp_path / "c"), "--list", listing, "--count", "1", "--rate", "0"]) == EXIT_USAGE
    assert "rate" in one_line_error(capsys, "seg-make-bag")


def test_seg_demo_names_a_missing_bag_and_topic(tmp_path, camvid_pairs, capsys):
    out = ["--out", str(tmp_path / "out")]
    assert demo_cli.main(["--bag", str(tmp_path / "nothing"), *out]) == EXIT_FAILURE
    assert "does not exist" in one_line_error(capsys, "seg-demo")
    bag = make_bag(tmp_path / "bag", camvid_pairs[:1], progress=False)
    assert demo_cli.main(["--bag", str(bag), "--image-topic", "/front/image", *out]) == EXIT_USAGE
    assert "/front/image" in one_line_error(capsys, "seg-demo")


def test_seg_bench_and_healthcheck_name_bad_input(tmp_path, capsys):
    assert bench_cli.main(["--backends", "torch-tpu"]) == EXIT_USAGE
    assert "torch-tpu" in one_line_error(capsys, "seg-bench")
    assert bench_cli.main(["--camvid", str(tmp_path), "--models", "cgnet"]) == EXIT_FAILURE
    assert "val.txt" in one_line_error(capsys, "seg-bench")
    assert healthcheck_cli.main(["--timeout", "0"]) == EXIT_USAGE
    assert "--timeout" in one_line_error(capsys, "seg-healthcheck")


@pytest.mark.slow
def test_a_console_script_prints_no_traceback(tmp_path):
    """As a user runs it: a separate process, one line on stderr, the exit status of a failure."""
    done = subprocess.run([sys.executable, "-m", "seg_node.cli.replay", str(tmp_path / "nothing"),
                           "--image-topic", "/camera/image_raw"], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_FAILURE
    assert "Traceback" not in done.stderr and done.stderr.strip().startswith("seg-replay: ")


def test_the_bag_players_options_are_its_settings_with_the_same_defaults(capsys):
    from seg_node.cli import bag_player as bag_player_cli
    from seg_node.ros_tools.bag_player import PlayerSettings

    parser = bag_player_cli.build_parser()
    args, ros_args = parser.parse_known_args(["demo.mcap", "--topic", "/camera", "--ros-args", "-r", "a:=b"])
    assert PlayerSettings(**vars(args)) == PlayerSettings(bag=Path("demo.mcap"), topic="/camera")
    assert ros_args == ["--ros-args", "-r", "a:=b"]
    settings = PlayerSettings(**vars(parser.parse_args(["b", "--topic", "t", "--count", "8", "--no-restamp"])))
    assert (settings.count, settings.restamp) == (8, False)
    with pytest.raises(SystemExit) as done:
        bag_player_cli.main(["--help"])
    assert done.value.code == 0 and "--wait-timeout" in capsys.readouterr().out
