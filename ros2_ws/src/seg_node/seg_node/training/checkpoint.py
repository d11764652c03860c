"""Training checkpoints: what a run saves every epoch, how it resumes exactly, and export to shippable weights.

A checkpoint holds only plain values and tensors (the config as a dict, state dicts, RNG
states), so it is read with ``torch.load(weights_only=True)`` and never unpickles objects.
"""

from __future__ import annotations

import pickle
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights import SegClass, WeightsError, WeightsInfo, check_compatible, read_info, save_weights
from .config import TrainingConfig, TrainingError, model_from_config


@dataclass
class Progress:
    """Where a run is: epochs and steps done, the best val mIoU so far and one history row per epoch."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DataStats:
    """What the data set gives the model: input normalisation and the loss's class weights."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_weights: list[float] | None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise TrainingError(f"cannot read checkpoint {path}: {error}") from error


def config_of(checkpoint: dict[str, Any]) -> TrainingConfig:
    return TrainingConfig.from_dict(checkpoint["config"], "checkpoint config")


def rng_state() -> dict[str, Any]:
    # Only torch's generators are used during training (dropout); augmentation is seeded per sample.
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(
    config: TrainingConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    stats: DataStats,
    spec: Any,
) -> dict[str, Any]:
    """Everything ``restore`` needs to continue the run, plus what ``export_checkpoint`` writes into the JSON."""
    return {
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": progress.epoch,
        "step_in_epoch": progress.step_in_epoch,
        "global_step": progress.global_step,
        "best_miou": progress.best_miou,
        "history": progress.history,
        "rng": rng_state(),
        "mean": list(stats.mean),
        "std": list(stats.std),
        "class_weights": stats.class_weights,
        "classes": [(c.id, c.name, list(c.color)) for c in spec.classes],
        "ignore_index": spec.ignore_index,
        "dataset": spec.name,
    }


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def stats_of(checkpoint: dict[str, Any]) -> DataStats:
    return DataStats(tuple(checkpoint["mean"]), tuple(checkpoint["std"]), checkpoint["class_weights"])


def restore(
    checkpoint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Progress:
    """Load the states of ``checkpoint`` and the RNG; the returned progress continues where it stopped."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    return Progress(
        checkpoint["epoch"],
        checkpoint["step_in_epoch"],
        checkpoint["global_step"],
        checkpoint["best_miou"],
        checkpoint["history"],
    )


def load_initial_weights(model: nn.Module, weights_path: str | Path) -> WeightsInfo:
    """Warm start: shipped weights into a training model (which may have heads the weights lack, ``aux_*``)."""
    from safetensors.torch import load_file

    try:
        info = read_info(weights_path)
        check_compatible(model, info, weights_path)
    except WeightsError as error:
        raise TrainingError(f"--init: {error}") from error
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own untyped errors
        raise TrainingError(f"cannot read {weights_path}: {error}") from error
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("aux_")]
    if missing or unexpected:
        raise TrainingError(
            f"{weights_path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return info


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def weights_info_from_checkpoint(checkpoint: dict[str, Any], model: nn.Module) -> WeightsInfo:
    config = config_of(checkpoint)
    splits = [Path(name).stem for name in config.train_list]
    saw_val = any("val" in split for split in splits)
    history = checkpoint["history"]
    val_mious = [row["val_miou"] for row in history if row["val_miou"] is not None]
    recipe = ("optimizer", "lr", "batch_size", "crop_size", "epochs", "poly_power", "weight_decay", "aux_weight")
    return WeightsInfo(
        architecture=model.name,
        variant=model.variant,
        classes=[SegClass(i, name, tuple(color)) for i, name, color in checkpoint["classes"]],
        mean=tuple(checkpoint["mean"]),
        std=tuple(checkpoint["std"]),
        input_size=config.input_size,
        dataset=checkpoint["dataset"],
        splits=splits,
        ignore_index=checkpoint["ignore_index"],
        # a val mIoU only from weights that never saw val
        val_miou=None if saw_val or not val_mious else float(checkpoint["best_miou"]),
        epochs=int(checkpoint["epoch"]),
        commit=git_commit(),
        training={k: getattr(config, k) for k in recipe}
        | {"steps": checkpoint["global_step"], "best_epoch_by_val": _best_epoch(history)},
    )


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    scored = [row for row in history if row["val_miou"] is not None]
    return max(scored, key=lambda row: row["val_miou"])["epoch"] if scored else None


def export_checkpoint(checkpoint_path: str | Path, weights_path: str | Path) -> Path:
    """Write the weights of a training checkpoint as ``<name>.safetensors`` plus ``<name>.json``."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_config(config_of(checkpoint), len(checkpoint["classes"]), training=False)
    model.load_state_dict({k: v for k, v in checkpoint["model"].items() if not k.startswith("aux_")})
    return save_weights(model, weights_info_from_checkpoint(checkpoint, model), weights_path)
