"""The papers' CamVid schedules in one command on a lent GPU: both models, each on the drive split and on every drive.

    python tools/campaign.py --budget 540 --out /tmp/campaign --report $OUT
    python tools/campaign.py --models cgnet --epochs cgnet=800 --seeds 3 --budget 540 ...

A maintainers' tool, outside the installed package (as Isaac ROS keeps its ``scripts/``): it runs from a
checkout, with the package installed or not (it finds ``ros2_ws/src/seg_node`` beside it).

This project is lent a GPU for minutes, not hours, so one call has to do everything issue #13 asks of
it. CamVid's val.txt is the same drive (0016E5) as most of train.txt (issue #41), so every figure comes from a
drive nothing trains on. Each model trains from scratch with its recipe (``configs/<model>_camvid.yaml``):

- ``<model>_drives``, the *twin*: the recipe's drive split, its ``train_list`` (drives 0001TP and 0016E5) validated
  on its ``val_list`` (drive 0006R0). Its mIoU there is the recipe's figure on a road it never saw
  (``--train-list`` and ``--val-list`` replace the recipe's lists).
- ``<model>_alldrives``, the weights that ship: every drive (``--all-lists``, train.txt and val.txt), no
  validation, as the CGNet paper trains its final model.
- With ``--seeds N``, N - 1 more twins at the next seeds (``<model>_drives_seed<S>``): the spread of the twins'
  unseen-drive mIoU across seeds is what a change to the recipe has to beat (issue #41) before it is kept.
- With ``--leave-one-drive-out``, one more twin per other drive of the twin's lists
  (``<model>_drives_without_<D>``): trained on the remaining drives, validated on D. With the twin, which leaves
  out its own validation drive, every drive is left out once; the mean and spread of their mIoU is the recipe's
  figure on an unseen road over three roads, not one. Their lists are written by drive into
  ``OUT/drive_lists/<model>/``. Each trains on a part of the run on every drive's frames, so it ends before it.

All runs share the one GPU, side by side:

0. **Preflight.** A lent machine may carry only torch, NumPy and ONNX Runtime. Before any budget is
   spent, a fresh interpreter imports what ``seg-train`` needs (OpenCV, PyYAML, tqdm, matplotlib and
   the trainer); if that fails the report names what is missing and the campaign stops (exit 1) within
   seconds. This supervisor itself needs only torch and the standard library until then.
1. **Probe.** Every run trains ``PROBE_EPOCHS`` short epochs, all at once as they will run later. This
   proves the CUDA training path before the budget goes into it, and measures each run's seconds per
   epoch under that shared load, its start-up time and what a validation costs.
2. **Schedule.** A model keeps its recipe's epochs (the papers': CGNet 800, ContextNet 1000) where both
   its runs end within the budget at the probed pace, else as many as fit (``--epochs MODEL=N`` sets them).
   The twins get the same epochs as the run on every drive, so that they stay twins (``seg-export --twin``
   compares their recipes).
3. **Train.** All runs start together; ``nvidia-smi`` is read every second for the GPU's busy percentage.
   A run still going at the deadline is stopped (Ctrl-C: its ``last.pt`` is saved for ``seg-train
   --resume``) and is not exported: weights from the middle of a schedule are not the recipe's.
4. **Export.** A finished twin (the recipe's seed) to ``weights/<model>_camvid_drives``, its JSON stating its
   mIoU on the validation list and drive; a finished run on every drive (whose twin finished) to
   ``weights/<model>_camvid``, its JSON naming the twin and its figure. Both list the stages, drives and hardware.
   The twins at other seeds are measurements, not exported.
5. **Report.** ``campaign.json`` and ``campaign.md`` (per run: the lists and drives it trained on, the list it
   was validated on, its seed, outcome, epochs, steps, images/s, mIoU; per model the twins' mean and spread
   across seeds; the GPU's busy percentage) and ``campaign.tar.gz`` with the weights and every run's history,
   curves and log, in ``--report``: three files, since the device tool brings back only a few.

On a CPU it runs the same way (``tests/test_campaign.py`` runs it on a few frames); the GPU's busy
percentage is then not measured. Exit status 0 when every run finished its schedule, 1 otherwise (the
report says which and why), 2 for options that do not fit. A twin whose validation drive it also trains on
stops the campaign before the probe (exit 1): its figure would not be on an unseen road.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "seg_node"
try:
    import seg_node  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:  # a bare checkout: the package beside this folder, for this process and its runs
    sys.path.insert(0, str(PACKAGE_ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))

import torch  # noqa: E402

from seg_node.cli import EXIT_FAILURE, HelpFormatter, entry_point  # noqa: E402
from seg_node.errors import SegNodeError, UsageError  # noqa: E402

MODELS = ("cgnet", "contextnet")
TWIN, SHIPPED = "drives", "alldrives"  # the drive split (validated on a drive it never saw) and every drive
SEED_TWIN, FOLD = f"{TWIN}_seed", f"{TWIN}_without_"  # role prefixes: the twin at another seed; a drive left out
PROBE_EPOCHS = 3  # the first one warms up (CUDA context, cuDNN's algorithm search); the pace is the others'
VALIDATIONS = 8  # a twin's mIoU at this many points of its schedule (and after the last epoch)
EXPORT_RESERVE_S = 30.0  # kept back from the budget for stopping runs, exporting and packing
FIT_SHARE = 0.9  # of the seconds left: the pace of the probe's few epochs is only an estimate
STOP_GRACE_S = 30.0  # how long a stopped run may take to save its checkpoint before it is killed
PREFLIGHT_TIMEOUT_S = 60.0  # importing torch and the trainer: seconds on a GPU machine, a minute at worst
# what seg-train imports beyond torch and NumPy, the trainer itself last (its own imports then all passed)
TRAIN_IMPORTS = ("cv2", "yaml", "tqdm", "matplotlib", "seg_node.training.trainer")


class CampaignError(SegNodeError):
    """The campaign could not start or schedule its runs; the report says why."""


@dataclass
class CampaignSettings:
    """What one campaign does (its flags, same names)."""

    models: list[str] = field(default_factory=lambda: list(MODELS))
    budget: float = 540.0  # seconds for everything, start to report
    out: Path = Path("runs/campaign")  # the runs (checkpoints, logs) and weights/
    report: Path | None = None  # campaign.json, .md and .tar.gz; None: ``out``
    data: str = "../shared/datasets/camvid"
    train_list: list[str] | None = None  # the twins' training lists; None: the recipe's (its drive split)
    val_list: str | None = None  # the twins' validation list; None: the recipe's (a drive they never saw)
    all_lists: list[str] = field(default_factory=lambda: ["train.txt", "val.txt"])  # every drive: the shipped run
    seeds: int = 1  # twins per model, at the recipe's seed and the next ones
    leave_one_drive_out: bool = False  # one more twin per other drive, validated on it
    configs: str = "configs"
    device: str | None = None  # cuda, cuda:N or cpu; None: seg-train's choice (cuda if available)
    threads_per_run: int = field(default_factory=lambda: max(1, (os.cpu_count() or 4) // 4))
    epochs: list[str] = field(default_factory=list)  # MODEL=N
    override: list[str] = field(default_factory=list)  # seg-train KEY=VALUE for every run
    train_program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "seg_node.cli.train"])

    @property
    def report_folder(self) -> Path:
        return Path(self.report or self.out)


@dataclass
class Run:
    """One training process: ``model`` on ``train_lists``, validated on ``val_list`` ("": none), at ``seed``.

    ``role``: ``drives`` (the twin), ``drives_seed<S>`` (a twin at another seed), ``drives_without_<D>`` (a twin
    validated on drive D, trained on the others) or ``alldrives`` (what ships).
    """

    model: str
    role: str
    parent: Path
    train_lists: list[str]
    val_list: str
    seed: int
    outcome: str = "not started"
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.model}_{self.role}"

    @property
    def folder(self) -> Path:
        return self.parent / self.name

    @property
    def log(self) -> Path:
        return self.folder / "train.log"

    def history(self) -> list[dict[str, str]]:
        path = self.folder / "history.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as stream:
            return list(csv.DictReader(stream))


@dataclass
class Probe:
    """What a model's probe runs measured: an epoch's seconds of the twin and of the run on every drive (without
    validation), the start-up's seconds and one validation's."""

    epoch_s: dict[str, float]
    startup_s: float
    validation_s: float


@dataclass
class Plan:
    """A model's schedule: the recipe's epochs, the epochs that fit (or were set) and how they were chosen."""

    recipe_epochs: int
    epochs: int
    val_every: int
    reason: str
    images_per_epoch: dict[str, int] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)


class GpuBusySampler:
    """Reads the GPU's busy percentage (``nvidia-smi utilization.gpu``) once a second while it runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.unavailable = "" if shutil.which("nvidia-smi") else "nvidia-smi not found (no NVIDIA GPU)"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> GpuBusySampler:
        if not self.unavailable:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"]
        while not self._stop.wait(1.0):
            try:
                text = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True).stdout
                self.samples.append(float(text.split()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
                self.unavailable = f"nvidia-smi failed: {error}"
                return

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"measured": False, "why": self.unavailable or "no sample was taken"}
        ordered = sorted(self.samples)
        return {
            "measured": True,
            "samples": len(ordered),
            "mean_percent": round(sum(ordered) / len(ordered), 1),
            "median_percent": ordered[len(ordered) // 2],
            "min_percent": ordered[0],
        }


def train_command(run: Run, settings: CampaignSettings, epochs: int, val_every: int) -> list[str]:
    """The ``seg-train`` command line of ``run`` (``settings.train_program`` and its options): its recipe from
    scratch, its lists and seed, these epochs."""
    options = {
        "config": str(Path(settings.configs) / f"{run.model}_camvid.yaml"),
        "data": settings.data,
        "train-list": json.dumps(run.train_lists),
        "val-list": json.dumps(run.val_list),
        "epochs": str(epochs),
        "val-every": str(val_every if run.val_list else 0),
        "out": str(run.folder),
        "workers": "0",  # on CUDA the data set is on the GPU; on a CPU the cores go to the network
        "threads": str(settings.threads_per_run),
        **({"device": settings.device} if settings.device else {}),
        **_pairs(settings.override),
        "seed": str(run.seed),  # the recipe's (with --override), or a twin's next one
    }
    command = list(settings.train_program)  # seg-train's command, which the console script passes in
    for key, value in options.items():
        command += [f"--{key}", value]
    return command


def supervise(commands: dict[str, list[str]], logs: dict[str, Path], deadline: float) -> dict[str, tuple[str, float]]:
    """Run every command at once, each writing ``logs[name]``, until all end or ``deadline`` (a monotonic time).

    Returns per name its outcome (``finished``, ``failed (exit N)``, ``stopped at the deadline``) and its
    seconds. At the deadline the runs still going get SIGINT (seg-train then saves ``last.pt``), and
    SIGKILL after ``STOP_GRACE_S``.
    """
    processes: dict[str, subprocess.Popen] = {}
    started, outcomes = time.monotonic(), {}
    try:
        for name, command in commands.items():
            logs[name].parent.mkdir(parents=True, exist_ok=True)
            with open(logs[name], "w") as log:
                processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while len(outcomes) < len(processes):
            for name, process in processes.items():
                if name not in outcomes and process.poll() is not None:
                    code = process.returncode
                    outcomes[name] = ("finished" if code == 0 else f"failed (exit {code})", time.monotonic() - started)
            if len(outcomes) < len(processes) and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    finally:
        still_running = {name: p for name, p in processes.items() if name not in outcomes}
        for process in still_running.values():
            process.send_signal(signal.SIGINT)
        for name, process in still_running.items():
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            outcomes[name] = ("stopped at the deadline", time.monotonic() - started)
    return outcomes


def probe_results(runs: dict[str, Run], images_per_epoch: dict[str, int]) -> Probe:
    """What a model's probe measured (its runs, ``PROBE_EPOCHS`` epochs each, the twins validating every epoch).

    An epoch's seconds are those between the first and the last epoch's end (the first one warms up), from
    the history's wall clock; they include the epoch's bookkeeping and, for the twin, a validation, whose
    cost is what the twin's epoch takes beyond the shipped run's epoch scaled to the twin's images.
    Start-up is what the process took beyond its epochs (imports, CUDA, decoding the data set, the end).
    """
    epoch_s, startup = {}, {}
    for role, run in runs.items():
        history = run.history()
        if run.outcome != "finished" or len(history) < 2:
            raise CampaignError(f"the probe of {run.name} did not train ({run.outcome}); its log: {run.log}")
        first, last = float(history[0]["time_s"]), float(history[-1]["time_s"])
        epoch_s[role] = (last - first) / (len(history) - 1)
        startup[role] = max(0.0, run.seconds - last)
    twin_epoch_s = epoch_s[SHIPPED] * images_per_epoch[TWIN] / images_per_epoch[SHIPPED]
    validation = max(0.0, epoch_s[TWIN] - twin_epoch_s)
    return Probe({TWIN: twin_epoch_s, SHIPPED: epoch_s[SHIPPED]}, max(startup.values()), validation)


def fit_epochs(recipe_epochs: int, images_per_epoch: dict[str, int], probe: Probe, seconds: float) -> Plan:
    """The most epochs (up to the recipe's) in which every run of a model ends within ``FIT_SHARE`` of
    ``seconds`` at the probed pace, start-up and the twins' validations included; 0 if not even one fits."""
    fitting = []
    for role, epoch_s in probe.epoch_s.items():
        validations = (VALIDATIONS + 1) * probe.validation_s if role == TWIN else 0.0
        fitting.append((FIT_SHARE * seconds - probe.startup_s - validations) / epoch_s)
    epochs = max(0, min(recipe_epochs, math.floor(min(fitting))))
    reason = "the recipe's" if epochs == recipe_epochs else f"fitted to {seconds:.0f} s at the probed pace"
    if epochs == 0:
        reason = f"not started: {seconds:.0f} s left, not enough for start-up and one epoch at the probed pace"
    return Plan(recipe_epochs, epochs, validation_interval(epochs), reason, dict(images_per_epoch))


def validation_interval(epochs: int) -> int:
    """Validate every this many epochs: at most ``VALIDATIONS`` times, and after the last epoch."""
    return max(1, math.ceil(epochs / VALIDATIONS))


def _pairs(items: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``."""
    return dict(item.split("=", 1) for item in items)


Folds = dict[str, tuple[list[str], str]]  # per drive left out: the lists to train on, and that drive's list


def model_runs(model: str, recipe: Any, settings: CampaignSettings, folder: Path, folds: Folds | None = None
               ) -> dict[str, Run]:
    """A model's runs in ``folder``, by role: its twins (the drive split, one per seed, the recipe's first), one
    per fold of ``folds`` (a drive left out: the lists to train on and its list, ``drive_folds``), and the run on
    every drive (at the recipe's seed, as its twin)."""
    lists = settings.train_list or list(recipe.train_list)
    val_list = recipe.val_list if settings.val_list is None else settings.val_list
    runs = {TWIN: Run(model, TWIN, folder, lists, val_list, recipe.seed)}
    for seed in range(recipe.seed + 1, recipe.seed + settings.seeds):
        runs[f"{SEED_TWIN}{seed}"] = Run(model, f"{SEED_TWIN}{seed}", folder, lists, val_list, seed)
    for drive, (train_lists, held_out) in (folds or {}).items():
        runs[f"{FOLD}{drive}"] = Run(model, f"{FOLD}{drive}", folder, train_lists, held_out, recipe.seed)
    runs[SHIPPED] = Run(model, SHIPPED, folder, list(settings.all_lists), "", recipe.seed)
    return runs


def drive_folds(data: str, twin: Run, folder: Path) -> Folds:
    """The leave-one-drive-out folds besides the twin: for each drive of the twin's lists but its validation
    drive(s), the other drives' lists to train on and that drive's list to validate on. The lists are the twin's
    frames split by drive, written into ``folder``."""
    from seg_node.datasets import lines_by_drive, write_drive_lists

    held_out_by_twin = set(lines_by_drive(data, [twin.val_list]))
    by_drive = write_drive_lists(lines_by_drive(data, [*twin.train_lists, twin.val_list]), folder)
    return {drive: ([str(path) for other, path in by_drive.items() if other != drive], str(by_drive[drive]))
            for drive in by_drive if drive not in held_out_by_twin}


def describe_lists(runs: dict[str, Run], data: str) -> dict[str, dict[str, Any]]:
    """What each run but the seeds' twins (which have the twin's lists) trains on and is validated on: lists, drives
    and frames.

    Raises CampaignError when the twin has no validation list or trains on one of its validation drives (its
    figure would not be on a road it never saw), DatasetError for a list that cannot be read.
    """
    from seg_node.datasets import lines_by_drive

    described = {}
    for role in [role for role in runs if not role.startswith(SEED_TWIN)]:  # a seed's twin has the twin's lists
        run = runs[role]
        by_drive = lines_by_drive(data, run.train_lists)
        val_drives = list(lines_by_drive(data, [run.val_list])) if run.val_list else []
        described[role] = {"train_lists": run.train_lists, "train_drives": list(by_drive),
                           "frames": sum(len(lines) for lines in by_drive.values()),
                           "val_list": run.val_list, "val_drives": val_drives}
    twin = described[TWIN]
    if not twin["val_list"]:
        raise CampaignError(f"the twin of {runs[TWIN].model} has no validation list: set --val-list, or val_list in "
                            "its recipe, to a drive it does not train on")
    seen = sorted(set(twin["train_drives"]) & set(twin["val_drives"]))
    if seen:
        raise CampaignError(f"the twin of {runs[TWIN].model} trains on drive(s) {', '.join(seen)} of its validation "
                            f"list {twin['val_list']}: its mIoU would not be on a road it never saw; validate on a "
                            "drive that --train-list leaves out")
    return described


def _runs(
    recipes: dict[str, Any], settings: CampaignSettings, folder: Path, folds: dict[str, Folds] | None = None
) -> dict[str, dict[str, Run]]:
    return {model: model_runs(model, recipe, settings, folder, (folds or {}).get(model))
            for model, recipe in recipes.items()}


def _run_all(
    runs: dict[str, dict[str, Run]], settings: CampaignSettings, plans: dict[str, tuple[int, int]], deadline: float
) -> None:
    every = _every(runs)
    commands = {run.name: train_command(run, settings, *plans[run.model]) for run in every}
    for run in every:
        shutil.rmtree(run.folder, ignore_errors=True)  # a fresh schedule, never a leftover checkpoint
    outcomes = supervise(commands, {run.name: run.log for run in every}, deadline)
    for run in every:
        run.outcome, run.seconds = outcomes[run.name]


def _export(runs: dict[str, Run], weights: Path) -> dict[str, str]:
    """Weights of a model's finished runs: the twin (``<model>_camvid_drives``), then the run on every drive
    (``<model>_camvid``) naming it."""
    from seg_node.training.checkpoint import export_checkpoint

    exported: dict[str, str] = {}
    twin, shipped = runs[TWIN], runs[SHIPPED]
    twin_weights = weights / f"{twin.model}_camvid_drives.safetensors"
    if twin.outcome == "finished":
        exported[TWIN] = str(export_checkpoint(twin.folder / "last.pt", twin_weights))
        if shipped.outcome == "finished":
            shipped_weights = weights / f"{shipped.model}_camvid.safetensors"
            exported[SHIPPED] = str(export_checkpoint(shipped.folder / "last.pt", shipped_weights, twin_weights))
    return exported


def _spread(mious: list[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation and range."""
    return {
        "mean": statistics.fmean(mious) if mious else None,
        "std": statistics.stdev(mious) if len(mious) > 1 else None,
        "range": max(mious) - min(mious) if len(mious) > 1 else None,
    }


def seed_spread(runs: dict[str, Run]) -> dict[str, Any]:
    """The last mIoU of a model's finished twins (one per seed, on the drive they never saw): mean, sample standard
    deviation and range; the spread is what a change to the recipe must beat to be kept (issue #41)."""
    twins = [run for role, run in runs.items() if role == TWIN or role.startswith(SEED_TWIN)]
    scores = {run.seed: _run_report(run)["val_miou_last"] for run in twins if run.outcome == "finished"}
    return {
        "twins": len(twins),
        "miou_by_seed": {str(seed): miou for seed, miou in scores.items()},
        **_spread([miou for miou in scores.values() if miou is not None]),
    }


def drive_spread(runs: dict[str, Run], lists: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The leave-one-drive-out figure: the last mIoU of the twin and of each fold, by the drive it left out
    (``None`` for a run that did not finish), and their mean, standard deviation and range once every one did."""
    scores: dict[str, float | None] = {}
    for role, run in runs.items():
        if role == TWIN or role.startswith(FOLD):
            finished = run.outcome == "finished"
            scores[", ".join(lists[role]["val_drives"])] = _run_report(run)["val_miou_last"] if finished else None
    complete = all(miou is not None for miou in scores.values())
    return {"miou_by_drive": scores, "complete": complete,
            **_spread([miou for miou in scores.values() if miou is not None] if complete else [])}


def _run_report(run: Run) -> dict[str, Any]:
    history = run.history()
    scored = [float(row["val_miou"]) for row in history if row["val_miou"]]
    rates = [float(row["images_per_s"]) for row in history]
    return {
        "model": run.model,
        "role": run.role,
        "train_lists": run.train_lists,
        "val_list": run.val_list,
        "seed": run.seed,
        "outcome": run.outcome,
        "seconds": round(run.seconds, 1),
        "epochs_done": len(history),
        "steps": int(history[-1]["step"]) if history else 0,
        "images_per_s": round(sum(rates) / len(rates), 1) if rates else None,
        "val_miou_last": scored[-1] if scored and history[-1]["val_miou"] else None,
        "val_miou_best": max(scored) if scored else None,
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    gpu = report["gpu_busy"]
    busy = f"{gpu['mean_percent']}% mean, {gpu['min_percent']}% min" if gpu["measured"] else gpu["why"]
    lines = [
        f"# Training campaign on {report['hardware']}",
        "",
        f"Budget {report['budget_s']:.0f} s, used {report['seconds']:.0f} s; GPU busy while training: {busy}.",
        "",
        "| run | trains on (drives) | validated on (drives) | seed | outcome | epochs (recipe) | steps | images/s "
        "| mIoU last / best | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in report["runs"].items():
        plan = report["plans"][run["model"]]
        described = report["lists"][run["model"]]
        lists = described.get(run["role"], described[TWIN])  # a seed's twin has the twin's lists
        trains = f"{', '.join(Path(name).stem for name in lists['train_lists'])} ({', '.join(lists['train_drives'])})"
        validated = f"{Path(lists['val_list']).stem} ({', '.join(lists['val_drives'])})" if lists["val_list"] else "-"
        val = " / ".join(f"{100 * v:.2f}%" for v in (run["val_miou_last"], run["val_miou_best"]) if v is not None)
        lines.append(
            f"| {name} | {trains} | {validated} | {run['seed']} | {run['outcome']} | "
            f"{run['epochs_done']} of {plan['epochs']} ({plan['recipe_epochs']}) | "
            f"{run['steps']} | {run['images_per_s'] or '-'} | {val or '-'} | {run['seconds']} |"
        )
    lines.append("")
    for model, plan in report["plans"].items():
        lines.append(f"- {model}: {plan['epochs']} epoch(s), {plan['reason']}")
        spread = report["seeds"][model]
        if spread["std"] is not None:
            lines.append(f"  - its twins' mIoU on the drive they never saw, {len(spread['miou_by_seed'])} seeds: "
                         f"mean {100 * spread['mean']:.2f}%, standard deviation {100 * spread['std']:.2f} points, "
                         f"range {100 * spread['range']:.2f} points: a change to the recipe is kept only when it "
                         "gains more than this spread")
        folds = report.get("leave_one_drive_out", {}).get(model)
        if folds:
            by_drive = ", ".join(f"{drive} {'-' if miou is None else f'{100 * miou:.2f}%'}"
                                 for drive, miou in folds["miou_by_drive"].items())
            summary = (f"mean {100 * folds['mean']:.2f}%, standard deviation {100 * folds['std']:.2f} points"
                       if folds["complete"] and folds["std"] is not None else "incomplete: a run did not finish")
            lines.append(f"  - leave one drive out, each drive validated by twins that never saw it: {summary} "
                         f"({by_drive})")
    path.write_text("\n".join(lines) + "\n")


def pack(archive: Path, out: Path, weights: Path, runs: Sequence[Run]) -> Path:
    """``archive`` (.tar.gz): the exported weights and, per run, its history, curves and log."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(weights.glob("*")):
            tar.add(path, arcname=f"weights/{path.name}")
        for run in runs:
            for name in ("history.csv", "curves.png", "train.log"):
                if (run.folder / name).is_file():
                    tar.add(run.folder / name, arcname=f"runs/{run.folder.relative_to(out)}/{name}")
    return archive


def _every(runs: dict[str, dict[str, Run]]) -> list[Run]:
    return [run for by_role in runs.values() for run in by_role.values()]


def _plans(
    recipes: dict[str, Any], lists: dict[str, dict[str, dict[str, Any]]], probe_runs: dict[str, dict[str, Run]],
    forced: dict[str, str], seconds_left: float,
) -> dict[str, Plan]:
    """Each model's schedule from its probe: the epochs set with ``--epochs``, else those that fit."""
    plans: dict[str, Plan] = {}
    for model, recipe in recipes.items():
        per_epoch = {role: lists[model][role]["frames"] // recipe.batch_size * recipe.batch_size
                     for role in (TWIN, SHIPPED)}
        probe = probe_results(probe_runs[model], per_epoch)
        if model in forced:
            epochs = int(forced[model])
            plans[model] = Plan(recipe.epochs, epochs, validation_interval(epochs), "set by --epochs", per_epoch)
        else:
            plans[model] = fit_epochs(recipe.epochs, per_epoch, probe, seconds_left)
        plans[model].probe = asdict(probe)
        paces = ", ".join(f"{role} {seconds:.2f} s" for role, seconds in probe.epoch_s.items())
        print(f"{model}: an epoch takes {paces}; start-up {probe.startup_s:.1f} s, validation {probe.validation_s:.1f}"
              f" s; {plans[model].epochs} epoch(s) ({plans[model].reason})", flush=True)
    return plans


def _write_report(report: dict[str, Any], folder: Path) -> None:
    (folder / "campaign.json").write_text(json.dumps(report, indent=1) + "\n")
    if "error" in report:
        (folder / "campaign.md").write_text(f"# Training campaign on {report['hardware']}\n\n{report['error']}\n")
    else:
        write_markdown(report, folder / "campaign.md")


def train_imports_missing(program: Sequence[str]) -> str | None:
    """None when a fresh ``program`` interpreter imports what seg-train needs (``TRAIN_IMPORTS``), else what
    failed. ``program`` is seg-train's command; its interpreter is the first word."""
    script = ("import importlib, sys\nfor name in sys.argv[1:]:\n    try:\n        importlib.import_module(name)\n"
              "    except Exception as error:\n        sys.exit(f'{name}: {type(error).__name__}: {error}')\n")
    try:
        done = subprocess.run([program[0], "-c", script, *TRAIN_IMPORTS], capture_output=True, text=True,
                              timeout=PREFLIGHT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{program[0]} could not be run: {error}"
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["(no message)"])[-1]


def parse_value(text: str) -> Any:
    """An --override value as seg-train's YAML recipes read it: ``[64, 64]``, ``2``, ``true``, else text."""
    try:
        import yaml
    except ImportError:  # the preflight has stopped the campaign by then; JSON covers the usual values
        try:
            return json.loads(text)
        except ValueError:
            return text
    return yaml.safe_load(text)


def campaign(settings: CampaignSettings) -> dict[str, Any]:
    """Preflight, probe, schedule, train, export and report (the module's docstring); returns the report."""
    start = time.monotonic()
    end = start + settings.budget
    out, report_folder = Path(settings.out), settings.report_folder
    report_folder.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))  # as seg-train picks
    report: dict[str, Any] = {"hardware": str(device), "budget_s": settings.budget, "command": " ".join(sys.argv)}
    missing = train_imports_missing(settings.train_program)
    if missing is not None:
        report |= {"error": f"seg-train cannot start here: {missing}. Install OpenCV, PyYAML, tqdm and matplotlib "
                            "(pip install -r requirements.txt) or run on a machine that has them",
                   "seconds": round(time.monotonic() - start, 1)}
        _write_report(report, report_folder)
        raise CampaignError(report["error"])
    from seg_node.training.config import load_config
    from seg_node.training.lineage import describe_hardware

    report["hardware"] = describe_hardware(device)

    overrides = {key.replace("-", "_"): parse_value(value) for key, value in _pairs(settings.override).items()}
    try:  # the lists, before any budget is spent on them
        recipes = {model: load_config(Path(settings.configs) / f"{model}_camvid.yaml", overrides)
                   for model in settings.models}
        runs = _runs(recipes, settings, out)
        report["lists"] = {model: describe_lists(runs[model], settings.data) for model in settings.models}
        folds = {}
        if settings.leave_one_drive_out:  # the twins' lists passed the check above; split them by drive
            folds = {model: drive_folds(settings.data, runs[model][TWIN], out / "drive_lists" / model)
                     for model in settings.models}
            runs = _runs(recipes, settings, out, folds)
            report["lists"] = {model: describe_lists(runs[model], settings.data) for model in settings.models}
    except SegNodeError as error:
        report |= {"error": str(error), "seconds": round(time.monotonic() - start, 1)}
        _write_report(report, report_folder)
        raise
    weights = out / "weights"
    shutil.rmtree(weights, ignore_errors=True)
    weights.mkdir(parents=True)

    print(f"probe: {PROBE_EPOCHS} epochs of every run, side by side", flush=True)
    probe_runs = _runs(recipes, settings, out / "probe", folds)
    _run_all(probe_runs, settings, {model: (PROBE_EPOCHS, 1) for model in settings.models}, end - EXPORT_RESERVE_S)
    report["probe_runs"] = {run.name: _run_report(run) for run in _every(probe_runs)}
    try:
        plans = _plans(recipes, report["lists"], probe_runs, _pairs(settings.epochs),
                       end - EXPORT_RESERVE_S - time.monotonic())
    except CampaignError as error:  # the probe's logs are what the one who lent the GPU needs now
        report |= {"error": str(error), "seconds": round(time.monotonic() - start, 1)}
        _write_report(report, report_folder)
        pack(report_folder / "campaign.tar.gz", out, weights, _every(probe_runs))
        raise

    started = [model for model, plan in plans.items() if plan.epochs > 0]
    with GpuBusySampler() as sampler:
        _run_all({model: runs[model] for model in started}, settings,
                 {model: (plans[model].epochs, plans[model].val_every) for model in started}, end - EXPORT_RESERVE_S)
    report |= {
        "exported": {model: _export(runs[model], weights) for model in settings.models},
        "gpu_busy": sampler.summary(),
        "plans": {model: asdict(plan) for model, plan in plans.items()},
        "runs": {run.name: _run_report(run) for run in _every(runs)},
        "seeds": {model: seed_spread(runs[model]) for model in settings.models},
        **({"leave_one_drive_out": {model: drive_spread(runs[model], report["lists"][model])
                                    for model in settings.models}} if folds else {}),
        "seconds": round(time.monotonic() - start, 1),
    }
    _write_report(report, report_folder)
    pack(report_folder / "campaign.tar.gz", out, weights, _every(probe_runs) + _every(runs))
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults = CampaignSettings()
    parser = argparse.ArgumentParser(prog="campaign.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", type=lambda text: text.split(","), default=",".join(MODELS),
                        help="the models, comma-separated")
    parser.add_argument("--budget", type=float, default=defaults.budget, help="seconds for everything, start to "
                        "report")
    parser.add_argument("--out", type=Path, default=defaults.out, help="the runs (checkpoints, logs) and weights/")
    parser.add_argument("--report", type=Path, help="where campaign.json, .md and .tar.gz go; unset: OUT")
    parser.add_argument("--data", default=defaults.data, help="CamVid root")
    parser.add_argument("--train-list", nargs="+", default=defaults.train_list, metavar="LIST",
                        help="the twins' training lists; unset: each recipe's train_list (its drive split)")
    parser.add_argument("--val-list", default=defaults.val_list, help="the twins' validation list, a drive they do "
                        "not train on; unset: each recipe's val_list")
    parser.add_argument("--all-lists", nargs="+", default=defaults.all_lists, metavar="LIST",
                        help="every drive: the lists of the weights that ship (no validation)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help="twins per model, at the recipe's seed and "
                        "the next ones; their spread of mIoU is what a change must beat")
    parser.add_argument("--leave-one-drive-out", action="store_true",
                        help="one more twin per other drive, trained on the rest and validated on it: the mean and "
                        "spread over every drive left out once")
    parser.add_argument("--configs", default=defaults.configs, help="folder of the <model>_camvid.yaml recipes")
    parser.add_argument("--device", help="cuda, cuda:N or cpu; unset: seg-train's (cuda if available)")
    parser.add_argument("--threads-per-run", type=int, default=defaults.threads_per_run,
                        help="CPU threads of each training process")
    parser.add_argument("--epochs", action="append", default=[], metavar="MODEL=N",
                        help="a model's epochs instead of those that fit (repeatable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a seg-train option for every run, e.g. batch-size=16 (repeatable)")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [model for model in args.models if model not in MODELS]
    if unknown:
        raise UsageError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    malformed = [item for item in args.epochs + args.override if "=" not in item]
    if malformed:
        raise UsageError(f"--epochs and --override take NAME=VALUE, not {malformed}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be 1 or more (twins per model), not {args.seeds}")
    settings = CampaignSettings(**vars(args))
    report = campaign(settings)
    print((settings.report_folder / "campaign.md").read_text(), flush=True)
    return 0 if all(run["outcome"] == "finished" for run in report["runs"].values()) else EXIT_FAILURE


main = entry_point("campaign.py", _main)


if __name__ == "__main__":
    sys.exit(main())
