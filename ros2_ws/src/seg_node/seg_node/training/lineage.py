"""What a set of weights was trained on, stage by stage, for the JSON beside them.

A run started with ``--init`` continues the weights it starts from, so the exported JSON lists
that file's stages and then this run's: each with its splits, recipe, steps and hardware. The
weights saw every split of every stage; a val mIoU is stated only when no stage saw val.
Weights trained on train + val name their *train-only twin* (the same recipe on train alone),
whose val mIoU is the figure for the recipe (``record_train_only_twin``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..weights import WeightsInfo
from .config import TrainingConfig, TrainingError

# the seed too: a warm start with the seed of the stage before it draws the same crops, flips and order again
RECIPE = ("optimizer", "lr", "batch_size", "crop_size", "scale_range", "color_jitter", "cutmix", "dropout",
          "poly_power", "weight_decay", "aux_weight", "ema_decay", "class_weighting", "lovasz_weight",
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


def split_names(lists: list[str]) -> list[str]:
    """``['.../train.txt', 'val.txt']`` -> ``['train', 'val']``."""
    return [Path(name).stem for name in lists]


def saw_val(splits: list[str]) -> bool:
    return any("val" in split for split in splits)


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
        **{key: getattr(config, key) for key in DISTILLATION},
    } if teacher else {}
    return {
        "splits": split_names(config.train_list),
        "init": Path(config.init).stem if config.init else None,
        **{key: _as_json(getattr(config, key)) for key in RECIPE},
        "teacher": teacher["weights"] if teacher else None,
        **distilled,
        "planned_epochs": config.epochs,
        "epochs": int(checkpoint["epoch"]),
        "steps": int(checkpoint["global_step"]),
        "best_epoch_by_val": best_epoch,
        "hardware": checkpoint.get("hardware", []),
    }


def lineage(stages: list[dict[str, Any]], best_miou: float | None) -> tuple[list[str], float | None, dict[str, Any]]:
    """The splits the weights saw, their val mIoU (None when any stage saw val) and the JSON's ``training``.

    A stage's teacher passes on what it learnt from its splits, so they count as seen.
    """
    splits = list(dict.fromkeys(
        split for stage in stages for split in [*stage["splits"], *stage.get("teacher_splits", [])]
    ))
    hardware: list[str] = []
    for stage in stages:
        hardware += [name for name in stage.get("hardware", []) if name not in hardware]
    val_miou = None if saw_val(splits) else best_miou
    training = {
        "splits": splits,
        "hardware": hardware,
        "stages": stages,
        "total_steps": sum(int(stage.get("steps", 0)) for stage in stages),
    }
    return splits, val_miou, training


def record_train_only_twin(info: WeightsInfo, twin: WeightsInfo, twin_name: str) -> None:
    """Name in ``info`` (weights that saw val) the train-only weights of the same recipe, with their val mIoU.

    Raises TrainingError when ``twin`` saw val, has no val mIoU, is another network, or its stages
    differ from ``info``'s in anything but their splits (and their teachers, which need only both be there or
    both not: the twin's learnt from train alone).
    """
    if not saw_val(info.splits):
        raise TrainingError(f"the weights never saw val (splits {info.splits}): their own val mIoU needs no twin")
    if saw_val(twin.splits) or twin.val_miou is None:
        raise TrainingError(f"{twin_name} saw val or has no val mIoU (splits {twin.splits}): it is no train-only twin")
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
    info.training["train_only_twin"] = {
        "weights": twin_name,
        "val_miou": twin.val_miou,
        "note": "the same stages on train only; its val mIoU is this recipe's figure on unseen frames",
    }
