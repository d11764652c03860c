"""What a set of weights was trained on, stage by stage, for the JSON beside them.

A run started with ``--init`` continues the weights it starts from, so the exported JSON lists
that file's stages and then this run's: each with its splits, the drives of those splits (CamVid),
recipe, steps and hardware. The weights saw every split and drive of every stage; a val mIoU is
stated only for a validation list no stage trained on (nor, where drives are known, any of its drives).
Weights trained on every drive name their *twin* (the same recipe on a split that leaves the
validation drive out), whose val mIoU is the recipe's figure on a road it never saw (``record_twin``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..datasets import lines_by_drive
from ..weights import WeightsInfo
from .config import TrainingConfig, TrainingError

# the seed too: a warm start with the seed of the stage before it draws the same crops, flips and order again
RECIPE = ("optimizer", "lr", "batch_size", "crop_size", "scale_range", "color_jitter", "camera_effects", "cutmix",
          "dropout", "poly_power", "weight_decay", "aux_weight", "ema_decay", "class_weighting", "lovasz_weight",
          "ohem_threshold", "ohem_min_kept", "bn_recalibration", "seed")
# recorded for a stage with a teacher (training.distillation), beside the teacher's name and splits
DISTILLATION = ("distill_weight", "distill_temperature", "teacher_shares", "teacher_flip")
# what must be equal, stage by stage, for two runs to be twins (the splits, and so the teachers, may differ)
TWIN_RECIPE = (*RECIPE, *DISTILLATION, "planned_epochs")


def describe_hardware(device: torch.device) -> str:
    """The machine a run trains on, in words: the GPU's name, or the CPU's cores."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} GPU, PyTorch {torch.__version__}"
    return f"{os.cpu_count()}-core {platform.machine()} CPU, PyTorch {torch.__version__}"


def split_name(list_file: str) -> str:
    """``'.../drive_0006R0.txt'`` -> ``'drive_0006R0'``: how the weights card names a split."""
    return Path(list_file).stem


def split_names(lists: list[str]) -> list[str]:
    """``['.../train.txt', 'val.txt']`` -> ``['train', 'val']``."""
    return [split_name(name) for name in lists]


def list_drives(config: TrainingConfig, lists: list[str]) -> list[str] | None:
    """The drives of CamVid ``lists`` (file names ``<drive>_<frame>``); None for other data sets or no list."""
    if config.dataset != "camvid" or not lists:
        return None
    return list(lines_by_drive(config.data, lists))


def trained_splits(stages: list[dict[str, Any]]) -> list[str]:
    """Every split the stages trained on; a stage's teacher passes on what it learnt from its splits."""
    return list(dict.fromkeys(
        split for stage in stages for split in [*stage["splits"], *stage.get("teacher_splits", [])]
    ))


def trained_drives(stages: list[dict[str, Any]]) -> list[str] | None:
    """Every drive the stages (and their teachers) trained on; None when one of them does not record its drives."""
    if any(stage.get("drives") is None or (stage.get("teacher_splits") and stage.get("teacher_drives") is None)
           for stage in stages):
        return None
    return sorted({drive for stage in stages for drive in [*stage["drives"], *(stage.get("teacher_drives") or [])]})


def validation_unseen(stages: list[dict[str, Any]], val_list: str, val_drives: list[str] | None) -> bool:
    """Whether there is a validation list and no stage trained on it, nor (where it is known) on any of its drives."""
    if not val_list or split_name(val_list) in trained_splits(stages):
        return False
    if val_drives is None:
        return True
    drives = trained_drives(stages)
    return drives is not None and not set(drives) & set(val_drives)


def earlier_stages(info: WeightsInfo) -> list[dict[str, Any]]:
    """The stages that produced ``info``'s weights; a JSON without stages is one stage of its own."""
    training = dict(info.training)
    stages = [dict(stage) for stage in training.pop("stages", None) or [training]]
    for stage in stages:
        stage.setdefault("splits", list(info.splits))
        # JSONs written before stages were recorded may name one machine, as a string, for the whole file
        hardware = stage.get("hardware") or training.get("hardware") or []
        stage["hardware"] = [hardware] if isinstance(hardware, str) else list(hardware)
    return stages


def _as_json(value: Any) -> Any:
    # tuples as JSON gives them back (lists), so that a stage read from a file equals one just made
    return list(value) if isinstance(value, tuple) else value


def this_stage(checkpoint: dict[str, Any], config: TrainingConfig, best_epoch: int | None) -> dict[str, Any]:
    """The stage a checkpoint finished: its splits, recipe, teacher, schedule and the hardware it ran on."""
    teacher = checkpoint.get("teacher")  # Teacher.provenance()
    distilled = {
        "teacher_sha256": teacher["sha256"],
        "teacher_splits": list(teacher["splits"]),
        "teacher_drives": teacher.get("drives"),
        **{key: getattr(config, key) for key in DISTILLATION},
    } if teacher else {}
    return {
        "splits": split_names(config.train_list),
        "drives": list_drives(config, config.train_list),
        "init": Path(config.init).stem if config.init else None,
        **{key: _as_json(getattr(config, key)) for key in RECIPE},
        "teacher": teacher["weights"] if teacher else None,
        **distilled,
        "planned_epochs": config.epochs,
        "epochs": int(checkpoint["epoch"]),
        "steps": int(checkpoint["global_step"]),
        "best_epoch_by_val": best_epoch,
        # the list that scored this stage's epochs, and so any choice made on them (a stage kept, a recipe)
        "chosen_on": split_name(config.val_list) if config.val_list else None,
        "hardware": checkpoint.get("hardware", []),
    }


def lineage(
    stages: list[dict[str, Any]], best_miou: float | None, val_list: str = "val.txt",
    val_drives: list[str] | None = None,
) -> tuple[list[str], float | None, dict[str, Any]]:
    """The splits the weights saw, their mIoU on ``val_list`` (None when a stage trained on it or on one of
    its ``val_drives``) and the JSON's ``training``."""
    splits = trained_splits(stages)
    hardware: list[str] = []
    for stage in stages:
        hardware += [name for name in stage.get("hardware", []) if name not in hardware]
    val_miou = best_miou if validation_unseen(stages, val_list, val_drives) else None
    training = {
        "splits": splits,
        "drives": trained_drives(stages),
        "val_drives": val_drives,
        "hardware": hardware,
        "stages": stages,
        "total_steps": sum(int(stage.get("steps", 0)) for stage in stages),
    }
    return splits, val_miou, training


def record_twin(info: WeightsInfo, twin: WeightsInfo, twin_name: str) -> None:
    """Name in ``info`` (weights with no figure of their own: they trained on every drive) the weights of the same
    recipe trained on a split that leaves the validation frames out, with that validation's list and mIoU.

    Raises TrainingError when ``info`` has a figure of its own, ``twin`` has none, is another network, or its stages
    differ from ``info``'s in anything but their splits and drives (and their teachers, which need only both be
    there or both not: the twin's learnt from the twin's split alone).
    """
    if info.val_miou is not None:
        raise TrainingError(f"the weights have a val mIoU of their own on {info.val_list}: they need no twin")
    if twin.val_miou is None:
        raise TrainingError(f"{twin_name} has no val mIoU on frames it never trained on (splits {twin.splits}): "
                            "it is no twin")
    if (twin.architecture, twin.variant) != (info.architecture, info.variant):
        raise TrainingError(f"{twin_name} is {twin.describe()}, not {info.describe()}")
    ours, theirs = earlier_stages(info), earlier_stages(twin)
    if len(ours) != len(theirs):
        raise TrainingError(f"{twin_name} has {len(theirs)} training stages, these weights {len(ours)}")
    for number, (a, b) in enumerate(zip(ours, theirs, strict=True), 1):
        differ = [key for key in TWIN_RECIPE if key in a and key in b and a[key] != b[key]]
        if (a.get("teacher") is None) != (b.get("teacher") is None):
            differ.append("teacher")
        if differ:
            shown = ", ".join(f"{key} {a.get(key)!r} vs {b.get(key)!r}" for key in differ)
            raise TrainingError(f"stage {number} of {twin_name} is another recipe: {shown}")
    info.training["twin"] = {
        "weights": twin_name,
        "val_list": twin.val_list,
        "val_drives": twin.training.get("val_drives"),
        "val_miou": twin.val_miou,
        "note": "the same stages on a split without these frames; its mIoU is this recipe's figure on them",
    }
