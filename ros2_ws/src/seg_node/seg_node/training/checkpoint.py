"""Training checkpoints: what a run saves at the end of its epochs, how it resumes exactly, and export to
shippable weights.

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
from torch.optim.swa_utils import AveragedModel

from ..weights import SegClass, WeightsError, WeightsInfo, check_compatible, read_info, read_tensors, save_weights
from .config import TrainingConfig, TrainingError, model_from_config
from .lineage import lineage, list_drives, record_twin, this_stage


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
    provenance: dict[str, Any],
    ema: AveragedModel | None = None,
) -> dict[str, Any]:
    """Everything ``restore`` needs to continue the run, plus what ``export_checkpoint`` writes into the JSON.

    ``provenance``: ``earlier_stages`` (those of the ``--init`` weights) and ``hardware`` (each machine the
    run has trained on), see ``lineage``. ``ema``: the moving average of the weights (``ema_decay``), if kept.
    """
    averaged = {"ema": ema.state_dict()} if ema is not None else {}
    return {
        **averaged,
        **provenance,
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
    ema: AveragedModel | None = None,
) -> Progress:
    """Load the states of ``checkpoint`` and the RNG; the returned progress continues where it stopped.

    A run that kept no average before (``ema_decay`` set at the resume) starts its average there.
    """
    model.load_state_dict(checkpoint["model"])
    if ema is not None and "ema" in checkpoint:
        ema.load_state_dict(checkpoint["ema"])
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
    try:
        info = read_info(weights_path)
        check_compatible(model, info, weights_path)
        state = read_tensors(weights_path)
    except WeightsError as error:
        raise TrainingError(f"--init: {error}") from error
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
    history = checkpoint["history"]
    scored = [row for row in history if row["val_miou"] is not None]
    best_epoch = max(scored, key=lambda row: row["val_miou"])["epoch"] if scored else None
    stages = [*checkpoint.get("earlier_stages", []), this_stage(checkpoint, config, best_epoch)]
    val_list = config.val_list or None
    val_drives = list_drives(config, [val_list]) if val_list else None
    splits, val_miou, training = lineage(stages, validated_miou(checkpoint), val_list or "", val_drives)
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
        val_miou=val_miou,
        val_list=val_list,
        epochs=sum(int(stage.get("epochs", 0)) for stage in stages),
        commit=git_commit(),
        training=training,
    )


def validated_miou(checkpoint: dict[str, Any]) -> float | None:
    """The val mIoU of the checkpoint's own weights: measured when its epoch ended, else unknown (None).

    ``best.pt`` is saved right after its epoch's validation; ``last.pt`` holds the best mIoU so far, not
    its own, and after a Ctrl-C mid-epoch its weights have moved on since the last validation.
    """
    history = checkpoint["history"]
    ended = checkpoint["step_in_epoch"] == 0 and bool(history) and history[-1]["epoch"] == checkpoint["epoch"]
    return history[-1]["val_miou"] if ended else None


def shipped_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint ships: the moving average when the run kept one, else the trained weights."""
    if "ema" not in checkpoint:
        return checkpoint["model"]
    prefix = "module."  # AveragedModel's copy of the model; its other entry counts the updates
    return {key.removeprefix(prefix): value for key, value in checkpoint["ema"].items() if key.startswith(prefix)}


def export_checkpoint(checkpoint_path: str | Path, weights_path: str | Path, twin: str | Path | None = None) -> Path:
    """Write the weights of a training checkpoint as ``<name>.safetensors`` plus ``<name>.json``.

    ``twin``: for weights with no validation of their own (they trained on every drive), the weights of the
    same recipe trained without the validation drive; the JSON names them with their mIoU (``lineage.record_twin``).
    """
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_config(config_of(checkpoint), len(checkpoint["classes"]), training=False)
    model.load_state_dict({k: v for k, v in shipped_state(checkpoint).items() if not k.startswith("aux_")})
    info = weights_info_from_checkpoint(checkpoint, model)
    if twin is not None:
        try:
            twin_info = read_info(twin)
        except WeightsError as error:
            raise TrainingError(f"twin: {error}") from error
        record_twin(info, twin_info, Path(twin).stem)
    return save_weights(model, info, weights_path)
