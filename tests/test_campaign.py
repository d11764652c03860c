"""The GPU training campaign (seg_node.training.campaign): its schedule fitting, its supervisor's deadline, and one
whole campaign on a few CamVid frames on the CPU (probe, fitted schedule, twins side by side, export, report)."""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path

import pytest

from seg_node.cli import EXIT_FAILURE, EXIT_USAGE
from seg_node.cli import campaign as campaign_cli
from seg_node.training import campaign
from seg_node.training.campaign import Probe, fit_epochs, supervise
from seg_node.weights import read_info

REPO = Path(__file__).resolve().parents[1]


def test_epochs_fit_the_slower_run_and_never_exceed_the_recipe():
    probe = Probe({"train": 4.0, "trainval": 5.0}, startup_s=10.0, validation_s=2.0)
    images = {"train": 368, "trainval": 464}
    plan = fit_epochs(800, images, probe, seconds=200.0)
    # train + val: (0.9 x 200 - 10) / 5 = 34; the twin: (0.9 x 200 - 10 - 9 x 2) / 4 = 38
    assert (plan.epochs, plan.val_every) == (34, 5)  # 6 validations and one after the last
    assert plan.reason.startswith("fitted to 200 s")
    slow_validation = Probe({"train": 4.0, "trainval": 5.0}, startup_s=10.0, validation_s=5.0)
    assert fit_epochs(800, images, slow_validation, seconds=200.0).epochs == 31  # (170 - 45) / 4
    roomy = fit_epochs(800, images, probe, seconds=1e6)
    assert (roomy.epochs, roomy.reason, roomy.val_every) == (800, "the recipe's", 100)
    too_short = fit_epochs(800, images, probe, seconds=5.0)
    assert too_short.epochs == 0 and too_short.reason.startswith("not started: 5 s left")


def test_runs_still_going_at_the_deadline_are_stopped_and_outcomes_are_told_apart(tmp_path):
    commands = {
        "quick": [sys.executable, "-c", "print('done')"],
        "broken": [sys.executable, "-c", "raise SystemExit(3)"],
        # Like seg-train, the slow run installs its own SIGINT handler: a shell that starts the tests in the
        # background (`cmd &`) makes its children ignore SIGINT, and Python then installs none of its own.
        "slow": [sys.executable, "-c",
                 "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); time.sleep(60)"],
    }
    logs = {name: tmp_path / name / "train.log" for name in commands}
    start = time.monotonic()
    outcomes = supervise(commands, logs, deadline=start + 3.0)
    assert {name: outcome for name, (outcome, _) in outcomes.items()} == {
        "quick": "finished", "broken": "failed (exit 3)", "slow": "stopped at the deadline"
    }
    assert time.monotonic() - start < 15
    assert "done" in logs["quick"].read_text()
    assert "KeyboardInterrupt" in logs["slow"].read_text()  # SIGINT, which seg-train answers by saving last.pt


@pytest.mark.slow
def test_a_campaign_probes_trains_twins_side_by_side_and_exports(tmp_path, tiny_camvid):
    # the epochs are set, so that the test does not last its whole budget (fitting them: the first test)
    out, report_folder = tmp_path / "campaign", tmp_path / "report"
    argv = [
        "--models", "contextnet", "--budget", "150", "--out", str(out), "--report", str(report_folder),
        "--device", "cpu", "--epochs", "contextnet=4",
        "--data", tiny_camvid["data"], "--train-list", tiny_camvid["train"], "--val-list", tiny_camvid["val"],
        "--configs", str(REPO / "configs"), "--threads-per-run", "1",
        "--override", "crop-size=[64, 64]", "--override", "batch-size=2",
    ]
    start = time.monotonic()
    assert campaign_cli.main(argv) == 0
    assert time.monotonic() - start < 120

    # only the report comes back from a lent GPU: three files
    assert sorted(path.name for path in report_folder.iterdir()) == ["campaign.json", "campaign.md", "campaign.tar.gz"]
    report = json.loads((report_folder / "campaign.json").read_text())
    plan = report["plans"]["contextnet"]
    assert (plan["recipe_epochs"], plan["epochs"], plan["val_every"], plan["reason"]) == (1000, 4, 1, "set by --epochs")
    probe = plan["probe"]  # measured all the same
    assert probe["epoch_s"]["trainval"] > 0 and probe["startup_s"] > 0 and probe["validation_s"] >= 0
    assert plan["images_per_epoch"] == {"train": 4, "trainval": 4}  # 4 and 5 frames in batches of 2
    runs = report["runs"]
    assert {name: run["outcome"] for name, run in runs.items()} == {
        "contextnet_train": "finished", "contextnet_trainval": "finished"
    }
    assert runs["contextnet_train"]["epochs_done"] == runs["contextnet_trainval"]["epochs_done"] == plan["epochs"]
    assert report["gpu_busy"]["measured"] is False and report["gpu_busy"]["why"]

    twin = read_info(out / "weights/contextnet_camvid_train.safetensors")
    shipped = read_info(out / "weights/contextnet_camvid.safetensors")
    assert twin.splits == ["train"] and twin.val_miou == pytest.approx(runs["contextnet_train"]["val_miou_last"])
    assert shipped.val_miou is None and shipped.training["twin"]["weights"] == "contextnet_camvid_train"
    stage = shipped.training["stages"][-1]
    assert stage["planned_epochs"] == stage["epochs"] == plan["epochs"] and stage["init"] is None
    assert f"{plan['epochs']} of {plan['epochs']} (1000)" in (report_folder / "campaign.md").read_text()
    with tarfile.open(report_folder / "campaign.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"weights/contextnet_camvid.safetensors", "weights/contextnet_camvid_train.json",
            "runs/contextnet_train/history.csv", "runs/contextnet_trainval/train.log",
            "runs/contextnet_train/curves.png"} <= names


def test_unknown_models_and_malformed_options_are_refused(tmp_path, capsys):
    assert campaign_cli.main(["--models", "segformer", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown models ['segformer']" in capsys.readouterr().err
    assert campaign_cli.main(["--epochs", "cgnet800", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "NAME=VALUE, not ['cgnet800']" in capsys.readouterr().err


@pytest.mark.slow
def test_a_probe_that_fails_still_reports_with_its_logs(tmp_path, tiny_camvid, monkeypatch, capsys):
    monkeypatch.setattr(campaign, "EXPORT_RESERVE_S", 0.0)
    argv = [
        "--models", "contextnet", "--budget", "1", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r"),
        "--data", tiny_camvid["data"], "--train-list", tiny_camvid["train"], "--val-list", tiny_camvid["val"],
        "--configs", str(REPO / "configs"), "--device", "cpu",
    ]
    assert campaign_cli.main(argv) == EXIT_FAILURE
    assert "seg-campaign: the probe of contextnet_train did not train" in capsys.readouterr().err
    report = json.loads((tmp_path / "r/campaign.json").read_text())
    assert "did not train" in report["error"] and "did not train" in (tmp_path / "r/campaign.md").read_text()
    assert report["probe_runs"]["contextnet_train"]["outcome"] == "stopped at the deadline"
    with tarfile.open(tmp_path / "r/campaign.tar.gz") as tar:
        assert "runs/probe/contextnet_train/train.log" in tar.getnames()
