"""The GPU training campaign (tools/campaign.py): its schedule fitting, its supervisor's deadline, its preflight,
its check that a twin never validates on a drive it trains on, its command line, and one whole campaign on a few
CamVid frames of two drives on the CPU (probe, fitted schedule, twins at two seeds and the run on every drive
side by side, export, report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import PACKAGE_ROOT, REPO_ROOT

from seg_node.cli import EXIT_FAILURE, EXIT_USAGE
from seg_node.weights import read_info

REPO = REPO_ROOT
sys.path.insert(0, str(REPO / "tools"))
import campaign  # noqa: E402  (tools/campaign.py: a maintainers' tool outside the package)
from campaign import Probe, fit_epochs, supervise  # noqa: E402

campaign_cli = campaign


@pytest.fixture
def two_drives(tmp_path, camvid_root) -> dict[str, str]:
    """List files in tmp_path: four frames of drive 0016E5 to train a twin on, one of drive 0006R0 to validate it on,
    and one of 0016E5 from val.txt (the drive the twin trains on)."""
    train = (camvid_root / "train.txt").read_text().splitlines()
    lists = {
        "seen": [line for line in train if line.startswith("train/0016E5_")][:4],
        "unseen": [line for line in train if line.startswith("train/0006R0_")][:1],
        "same_drive": (camvid_root / "val.txt").read_text().splitlines()[:1],
    }
    for name, lines in lists.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return {name: str(tmp_path / f"{name}.txt") for name in lists} | {"data": str(camvid_root)}


def test_epochs_fit_the_slower_run_and_never_exceed_the_recipe():
    probe = Probe({"drives": 4.0, "alldrives": 5.0}, startup_s=10.0, validation_s=2.0)
    images = {"drives": 360, "alldrives": 464}
    plan = fit_epochs(800, images, probe, seconds=200.0)
    # every drive: (0.9 x 200 - 10) / 5 = 34; the twin: (0.9 x 200 - 10 - 9 x 2) / 4 = 38
    assert (plan.epochs, plan.val_every) == (34, 5)  # 6 validations and one after the last
    assert plan.reason.startswith("fitted to 200 s")
    slow_validation = Probe({"drives": 4.0, "alldrives": 5.0}, startup_s=10.0, validation_s=5.0)
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
def test_a_campaign_trains_twins_on_the_drive_split_and_ships_every_drive(tmp_path, two_drives):
    # the epochs are set, so that the test does not last its whole budget (fitting them: the first test); the
    # budget is generous because three processes share a busy machine's cores here
    out, report_folder = tmp_path / "campaign", tmp_path / "report"
    argv = [
        "--models", "contextnet", "--budget", "1200", "--out", str(out), "--report", str(report_folder),
        "--device", "cpu", "--epochs", "contextnet=4", "--seeds", "2", "--data", two_drives["data"],
        "--train-list", two_drives["seen"], "--val-list", two_drives["unseen"],
        "--all-lists", two_drives["seen"], two_drives["unseen"],
        "--configs", str(REPO / "configs"), "--threads-per-run", "1",
        "--override", "crop-size=[64, 64]", "--override", "batch-size=2",
    ]
    start = time.monotonic()
    assert campaign_cli.main(argv) == 0
    assert time.monotonic() - start < 1000  # it ends when its runs do, not at the end of its budget

    # only the report comes back from a lent GPU: three files
    assert sorted(path.name for path in report_folder.iterdir()) == ["campaign.json", "campaign.md", "campaign.tar.gz"]
    report = json.loads((report_folder / "campaign.json").read_text())
    plan = report["plans"]["contextnet"]
    assert (plan["recipe_epochs"], plan["epochs"], plan["val_every"], plan["reason"]) == (1000, 4, 1, "set by --epochs")
    probe = plan["probe"]  # measured all the same
    assert probe["epoch_s"]["alldrives"] > 0 and probe["startup_s"] > 0 and probe["validation_s"] >= 0
    assert plan["images_per_epoch"] == {"drives": 4, "alldrives": 4}  # 4 and 5 frames in batches of 2
    assert report["lists"]["contextnet"] == {
        "drives": {"train_lists": [two_drives["seen"]], "train_drives": ["0016E5"], "frames": 4,
                   "val_list": two_drives["unseen"], "val_drives": ["0006R0"]},
        "alldrives": {"train_lists": [two_drives["seen"], two_drives["unseen"]], "train_drives": ["0006R0", "0016E5"],
                      "frames": 5, "val_list": "", "val_drives": []},
    }
    runs = report["runs"]
    assert {name: (run["outcome"], run["seed"], run["val_list"]) for name, run in runs.items()} == {
        "contextnet_drives": ("finished", 1, two_drives["unseen"]),
        "contextnet_drives_seed2": ("finished", 2, two_drives["unseen"]),
        "contextnet_alldrives": ("finished", 1, ""),
    }
    assert all(run["epochs_done"] == plan["epochs"] for run in runs.values())  # the twins keep the shipped epochs
    assert runs["contextnet_alldrives"]["val_miou_last"] is None
    assert report["gpu_busy"]["measured"] is False and report["gpu_busy"]["why"]

    twins = [runs[name]["val_miou_last"] for name in ("contextnet_drives", "contextnet_drives_seed2")]
    spread = report["seeds"]["contextnet"]
    assert spread["miou_by_seed"] == {"1": twins[0], "2": twins[1]}
    assert spread["mean"] == pytest.approx(sum(twins) / 2)
    assert spread["range"] == pytest.approx(abs(twins[0] - twins[1]))
    assert spread["std"] == pytest.approx(abs(twins[0] - twins[1]) / 2 ** 0.5)

    # the twin states its figure on the drive it never saw; the weights that ship trained on both and name it
    assert not (out / "weights/contextnet_camvid_drives_seed2.safetensors").exists()  # a measurement, not exported
    twin = read_info(out / "weights/contextnet_camvid_drives.safetensors")
    shipped = read_info(out / "weights/contextnet_camvid.safetensors")
    assert twin.splits == ["seen"] and twin.training["drives"] == ["0016E5"]
    assert twin.val_list == two_drives["unseen"] and twin.training["val_drives"] == ["0006R0"]
    assert twin.val_miou == pytest.approx(twins[0])
    assert shipped.val_miou is None and shipped.training["drives"] == ["0006R0", "0016E5"]
    assert shipped.training["twin"] | {"note": ""} == {
        "weights": "contextnet_camvid_drives", "val_list": two_drives["unseen"], "val_drives": ["0006R0"],
        "val_miou": twin.val_miou, "note": "",
    }
    stage = shipped.training["stages"][-1]
    assert stage["planned_epochs"] == stage["epochs"] == plan["epochs"] and stage["init"] is None
    markdown = (report_folder / "campaign.md").read_text()
    assert "| contextnet_drives | seen (0016E5) | unseen (0006R0) | 1 | finished | 4 of 4 (1000) |" in markdown
    assert "| contextnet_drives_seed2 | seen (0016E5) | unseen (0006R0) | 2 | finished |" in markdown
    assert "| contextnet_alldrives | seen, unseen (0006R0, 0016E5) | - | 1 | finished | 4 of 4 (1000) |" in markdown
    assert f"2 seeds: mean {100 * spread['mean']:.2f}%, standard deviation {100 * spread['std']:.2f} points" in markdown
    with tarfile.open(report_folder / "campaign.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"weights/contextnet_camvid.safetensors", "weights/contextnet_camvid_drives.json",
            "runs/contextnet_drives/history.csv", "runs/contextnet_alldrives/train.log",
            "runs/contextnet_drives_seed2/history.csv", "runs/contextnet_drives/curves.png"} <= names


@pytest.fixture
def three_drives(tmp_path, camvid_root) -> dict[str, str]:
    """List files in tmp_path: two frames of each of CamVid's three drives here; the twin trains on 0001TP and
    0016E5 (``seen``) and validates on 0006R0 (``unseen``)."""
    train = (camvid_root / "train.txt").read_text().splitlines()
    frames = {drive: [line for line in train if line.startswith(f"train/{drive}_")][:2]
              for drive in ("0001TP", "0006R0", "0016E5")}
    (tmp_path / "seen.txt").write_text("\n".join(frames["0001TP"] + frames["0016E5"]) + "\n")
    (tmp_path / "unseen.txt").write_text("\n".join(frames["0006R0"]) + "\n")
    return {"seen": str(tmp_path / "seen.txt"), "unseen": str(tmp_path / "unseen.txt"), "data": str(camvid_root),
            **{drive: "\n".join(lines) + "\n" for drive, lines in frames.items()}}


def test_leaving_one_drive_out_adds_a_twin_per_other_drive_validated_on_it(tmp_path, three_drives):
    recipe = SimpleNamespace(train_list=[three_drives["seen"]], val_list=three_drives["unseen"], seed=1)
    settings = campaign.CampaignSettings(seeds=2, all_lists=[three_drives["seen"], three_drives["unseen"]])
    twin = campaign.model_runs("cgnet", recipe, settings, tmp_path / "runs")["drives"]
    folds = campaign.drive_folds(three_drives["data"], twin, tmp_path / "lists")
    lists = {drive: str(tmp_path / f"lists/drive_{drive}.txt") for drive in ("0001TP", "0006R0", "0016E5")}
    assert folds == {"0001TP": ([lists["0006R0"], lists["0016E5"]], lists["0001TP"]),
                     "0016E5": ([lists["0001TP"], lists["0006R0"]], lists["0016E5"])}  # 0006R0: the twin's own
    assert all(Path(lists[drive]).read_text() == three_drives[drive] for drive in lists)
    runs = campaign.model_runs("cgnet", recipe, settings, tmp_path / "runs", folds)
    assert list(runs) == ["drives", "drives_seed2", "drives_without_0001TP", "drives_without_0016E5", "alldrives"]
    fold = runs["drives_without_0016E5"]
    assert fold.seed == 1 and fold.name == "cgnet_drives_without_0016E5"
    described = campaign.describe_lists(runs, three_drives["data"])
    assert described["drives_without_0001TP"] == {"train_lists": [lists["0006R0"], lists["0016E5"]],
                                                  "train_drives": ["0006R0", "0016E5"], "frames": 4,
                                                  "val_list": lists["0001TP"], "val_drives": ["0001TP"]}

    # each run's last validation, as seg-train writes its history; one fold did not finish
    def ran(role: str, outcome: str, miou: float) -> None:
        runs[role].outcome = outcome
        runs[role].folder.mkdir(parents=True)
        (runs[role].folder / "history.csv").write_text(
            f"epoch,step,loss,lr,images_per_s,time_s,val_miou\n1,2,0.5,0.001,3.0,4.0,{miou}\n")

    for role, miou in (("drives", 0.40), ("drives_seed2", 0.44), ("drives_without_0001TP", 0.50),
                       ("drives_without_0016E5", 0.60)):
        ran(role, "finished", miou)
    spread = campaign.drive_spread(runs, described)
    assert spread["miou_by_drive"] == {"0006R0": 0.40, "0001TP": 0.50, "0016E5": 0.60} and spread["complete"]
    assert spread["mean"] == pytest.approx(0.5) and spread["std"] == pytest.approx(0.1)
    assert spread["range"] == pytest.approx(0.2)
    seeds = campaign.seed_spread(runs)  # the folds are not seeds of the twin
    assert seeds["twins"] == 2 and seeds["miou_by_seed"] == {"1": 0.40, "2": 0.44}
    runs["drives_without_0016E5"].outcome = "stopped at the deadline"
    unfinished = campaign.drive_spread(runs, described)
    assert unfinished["miou_by_drive"]["0016E5"] is None and not unfinished["complete"] and unfinished["mean"] is None
    report = {"gpu_busy": {"measured": False, "why": "a CPU"}, "hardware": "cpu", "budget_s": 60, "seconds": 50,
              "lists": {"cgnet": described}, "seeds": {"cgnet": seeds},
              "plans": {"cgnet": {"epochs": 1, "recipe_epochs": 800, "reason": "set by --epochs"}},
              "runs": {run.name: campaign._run_report(run) for run in runs.values()},
              "leave_one_drive_out": {"cgnet": spread}}
    campaign.write_markdown(report, tmp_path / "campaign.md")
    markdown = (tmp_path / "campaign.md").read_text()
    row = "| cgnet_drives_without_0001TP | drive_0006R0, drive_0016E5 (0006R0, 0016E5) | drive_0001TP (0001TP) |"
    assert row in markdown
    assert "leave one drive out, each drive validated by twins that never saw it: mean 50.00%, standard deviation " \
           "10.00 points (0006R0 40.00%, 0001TP 50.00%, 0016E5 60.00%)" in markdown
    campaign.write_markdown(report | {"leave_one_drive_out": {"cgnet": unfinished}}, tmp_path / "campaign.md")
    assert "incomplete: a run did not finish (0006R0 40.00%, 0001TP 50.00%, 0016E5 -)" in \
        (tmp_path / "campaign.md").read_text()


@pytest.mark.slow
def test_a_campaign_leaving_one_drive_out_trains_and_reports_every_fold(tmp_path, three_drives):
    out, report_folder = tmp_path / "campaign", tmp_path / "report"
    argv = [
        "--models", "contextnet", "--budget", "1200", "--out", str(out), "--report", str(report_folder),
        "--device", "cpu", "--epochs", "contextnet=2", "--leave-one-drive-out", "--data", three_drives["data"],
        "--train-list", three_drives["seen"], "--val-list", three_drives["unseen"],
        "--all-lists", three_drives["seen"], three_drives["unseen"],
        "--configs", str(REPO / "configs"), "--threads-per-run", "1",
        "--override", "crop-size=[64, 64]", "--override", "batch-size=2",
    ]
    assert campaign_cli.main(argv) == 0
    report = json.loads((report_folder / "campaign.json").read_text())
    runs = report["runs"]
    assert sorted(runs) == ["contextnet_alldrives", "contextnet_drives", "contextnet_drives_without_0001TP",
                            "contextnet_drives_without_0016E5"]
    assert all(run["outcome"] == "finished" and run["epochs_done"] == 2 for run in runs.values())
    spread = report["leave_one_drive_out"]["contextnet"]
    assert spread["complete"] and spread["miou_by_drive"] == {
        "0006R0": runs["contextnet_drives"]["val_miou_last"],
        "0001TP": runs["contextnet_drives_without_0001TP"]["val_miou_last"],
        "0016E5": runs["contextnet_drives_without_0016E5"]["val_miou_last"],
    }
    assert sorted(path.name for path in (out / "weights").glob("*.safetensors")) == [
        "contextnet_camvid.safetensors", "contextnet_camvid_drives.safetensors"]  # the folds are measurements
    assert "leave one drive out, each drive validated by twins that never saw it: mean" in \
        (report_folder / "campaign.md").read_text()


def test_a_twin_validated_on_a_drive_it_trains_on_is_refused_before_any_training(tmp_path, two_drives, capsys):
    argv = [
        "--models", "contextnet", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r"), "--device", "cpu",
        "--data", two_drives["data"], "--train-list", two_drives["seen"], "--val-list", two_drives["same_drive"],
        "--configs", str(REPO / "configs"),
    ]
    assert campaign_cli.main(argv) == EXIT_FAILURE
    assert "the twin of contextnet trains on drive(s) 0016E5 of its validation list" in capsys.readouterr().err
    assert "0016E5" in json.loads((tmp_path / "r/campaign.json").read_text())["error"]
    assert not (tmp_path / "runs").exists(), "nothing was trained or exported"


def test_unknown_models_and_malformed_options_are_refused(tmp_path, capsys):
    assert campaign_cli.main(["--models", "segformer", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown models ['segformer']" in capsys.readouterr().err
    assert campaign_cli.main(["--epochs", "cgnet800", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "NAME=VALUE, not ['cgnet800']" in capsys.readouterr().err
    assert campaign_cli.main(["--seeds", "0", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "--seeds must be 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_a_probe_that_fails_still_reports_with_its_logs(tmp_path, two_drives, monkeypatch, capsys):
    monkeypatch.setattr(campaign, "EXPORT_RESERVE_S", 0.0)
    argv = [
        "--models", "contextnet", "--budget", "1", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r"),
        "--data", two_drives["data"], "--train-list", two_drives["seen"], "--val-list", two_drives["unseen"],
        "--all-lists", two_drives["seen"], two_drives["unseen"], "--configs", str(REPO / "configs"), "--device", "cpu",
    ]
    assert campaign_cli.main(argv) == EXIT_FAILURE
    assert "campaign.py: the probe of contextnet_drives did not train" in capsys.readouterr().err
    report = json.loads((tmp_path / "r/campaign.json").read_text())
    assert "did not train" in report["error"] and "did not train" in (tmp_path / "r/campaign.md").read_text()
    assert report["probe_runs"]["contextnet_drives"]["outcome"] == "stopped at the deadline"
    with tarfile.open(tmp_path / "r/campaign.tar.gz") as tar:
        assert "runs/probe/contextnet_drives/train.log" in tar.getnames()


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        campaign.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and "usage: campaign.py" in text
    for needle in ("--budget", "default: 540.0", "--report", "default: unset", "cgnet,contextnet", "Preflight"):
        assert needle in text, needle


def test_a_machine_without_the_trainers_imports_gets_a_report_in_seconds(tmp_path, capsys):
    """torch, NumPy and ONNX Runtime only, as on a lent GPU: the preflight stops the campaign with a report."""
    (tmp_path / "blocked" / "cv2").mkdir(parents=True)
    (tmp_path / "blocked" / "cv2" / "__init__.py").write_text("raise ImportError('OpenCV is not installed here')\n")
    blocker = tmp_path / "python_without_cv2"
    blocker.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "blocked"}:$PYTHONPATH" exec {sys.executable} "$@"\n')
    blocker.chmod(0o755)
    settings = campaign.CampaignSettings(models=["contextnet"], budget=60, out=tmp_path / "runs",
                                         report=tmp_path / "report", device="cpu",
                                         train_program=[str(blocker), "-m", "seg_node.cli.train"])
    start = time.monotonic()
    with pytest.raises(campaign.CampaignError, match="seg-train cannot start here: cv2"):
        campaign.campaign(settings)
    assert time.monotonic() - start < 60
    report = json.loads((tmp_path / "report/campaign.json").read_text())
    assert report["error"].startswith("seg-train cannot start here: cv2") and "runs" not in report
    assert "cannot start here" in (tmp_path / "report/campaign.md").read_text()
    assert not (tmp_path / "runs").exists(), "nothing was trained or exported"


def test_the_supervisor_imports_without_the_trainers_stack():
    """tools/campaign.py itself needs only torch (and seg_node's cli and errors) until its preflight passes."""
    blocked = ("cv2", "yaml", "tqdm", "matplotlib")
    script = (f"import sys; sys.path.insert(0, {str(REPO / 'tools')!r}); "
              f"[sys.modules.__setitem__(name, None) for name in {blocked!r}]; "
              "import campaign; print(campaign.parse_value('[64, 64]'), campaign.parse_value('fast'))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[64,", "64]", "fast"]


def test_it_runs_from_a_checkout_without_the_package_on_the_path(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "campaign.py"), "--models", "unet"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE and done.stderr.startswith("campaign.py: unknown models ['unet']")
