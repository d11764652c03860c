"""``TrainingConfig``: every setting of a training run, typed, with its default and a help line.

Each field is a ``seg-train --flag`` (``--crop-size "[360, 360]"``); YAML recipes in ``configs/``
set them. Values are coerced to the field's type (a recipe's ``lr: 1e-3`` is a float even though
YAML reads it as a string) and checked; an unknown key is an error that lists the known ones.
Checkpoints store ``to_dict()`` (plain Python values) so that they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..errors import SegNodeError
from ..models import MODELS, build_model
from .losses import OHEM_MIN_KEPT


class TrainingError(SegNodeError, RuntimeError):
    """A recipe or checkpoint that cannot be used."""


def _option(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


CHOICES = {
    "model": tuple(sorted(MODELS)),
    "dataset": ("camvid", "cityscapes", "folder"),
    "optimizer": ("adam", "rmsprop"),
    "class_weighting": ("enet", "none"),
}


@dataclass
class TrainingConfig:
    model: str = _option("cgnet", "network: cgnet | contextnet")
    variant: str | None = _option(None, "the paper's variant (CGNet M3N21, ContextNet 12, ...); none: the default")
    dropout: float | None = _option(None, "dropout before the classifier; none: the model's default")
    dataset: str = _option("camvid", "camvid | cityscapes | folder")
    data: str = _option("../shared/datasets/camvid", "data set root")
    train_list: list[str] = _option(["train.txt"], "CamVid list files, or Cityscapes split names")
    val_list: str = _option("val.txt", "validation list or split; empty: no validation")
    classes: str | None = _option(None, "class table (YAML/JSON) for the folder format")
    input_size: tuple[int, int] = _option((360, 480), "(height, width) the weights are meant to run at")
    crop_size: tuple[int, int] = _option((360, 360), "(height, width) of the training crops")
    batch_size: int = _option(8, "images per optimizer step and process")
    epochs: int = _option(100, "epochs (the poly schedule ends with the last)")
    optimizer: str = _option("adam", "adam | rmsprop")
    lr: float = _option(1.0e-3, "initial learning rate")
    betas: tuple[float, float] = _option((0.9, 0.999), "Adam betas")
    momentum: float = _option(0.9, "RMSprop momentum")
    rms_decay: float = _option(0.9, "RMSprop decay (alpha)")
    eps: float = _option(1.0e-8, "optimizer epsilon")
    weight_decay: float = _option(5.0e-4, "L2 weight decay")
    poly_power: float = _option(0.9, "poly learning-rate decay per iteration: (1 - step/total)^power")
    ema_decay: float = _option(
        0.0, "keep an exponential moving average of the weights, this much of it kept per step (0.99: about the "
        "last 100 steps); validation, best.pt and export use the average; 0: off"
    )
    scale_range: tuple[float, float] = _option((0.5, 2.0), "random scale range before cropping")
    mirror: bool = _option(True, "random horizontal flips")
    color_jitter: float = _option(0.0, "strength of random brightness, contrast, saturation and hue")
    camera_effects: float = _option(
        0.0, "strength of what another camera or light does to a frame (training.augment.CameraEffects): at 1, "
        "Gaussian blur up to sigma 1.5 px on half the crops, sensor noise up to sigma 8 of 255, gamma 1/1.5-1.5; 0: off"
    )
    cutmix: float = _option(
        0.0, "CutMix (Yun et al. 2019): with this probability per crop, a random box of another crop of the batch "
        "and its labels pasted over it; a teacher sees the mixed batch too (training.cutmix); 0: off"
    )
    class_weighting: str = _option("enet", "enet (1/ln(1.10+p)) | none")
    aux_weight: float = _option(0.0, "ContextNet's auxiliary loss on the deep branch")
    lovasz_weight: float = _option(
        0.0, "add this much of the Lovasz-softmax loss (Berman et al. 2018: a surrogate of each class's 1 - IoU, so "
        "small classes count as much as large ones) to the cross-entropy; 0: cross-entropy alone"
    )
    ohem_threshold: float = _option(
        0.0, "online hard example mining: the cross-entropy only over the pixels whose true class's probability is "
        "below this (0.7 in BiSeNet), at least ohem_min_kept of them (training.losses); 0: every pixel"
    )
    ohem_min_kept: float = _option(
        OHEM_MIN_KEPT, "with ohem_threshold: the share of the labelled pixels, the hardest first, that the "
        "cross-entropy keeps at the least (BiSeNet: 1/16)"
    )
    teacher: list[str] = _option(
        [], "knowledge distillation: trained weights (.safetensors, the same classes) whose per-pixel class "
        "probabilities the network also learns (training.distillation); several (\"[a, b]\"): an ensemble, "
        "their probabilities averaged; their training splits count as seen; empty: off"
    )
    teacher_shares: list[float] = _option(
        [], "how much each teacher's probabilities count in an ensemble, in the order of teacher; empty: equally"
    )
    teacher_flip: bool = _option(
        False, "the teacher's probabilities also averaged with those of the mirrored batch (test-time flip: a "
        "stronger teacher at twice its cost)"
    )
    distill_weight: float = _option(1.0, "weight of the distillation term beside the cross-entropy (with teacher)")
    distill_temperature: float = _option(1.0, "softmax temperature of the distillation term (with teacher)")
    bn_recalibration: bool = _option(
        False, "after the last epoch, recompute every BatchNorm's statistics for the final weights over the training "
        "images as inference sees them (whole, unaugmented, at input_size; training.batchnorm); the last validation "
        "and the checkpoints then hold them"
    )
    workers: int = _option(2, "data loader processes (CPU data path)")
    seed: int = _option(1, "seed of the initial weights, the shuffling and the augmentation")
    val_every: int = _option(1, "validate every N epochs (and after the last); 0: never")
    amp: bool = _option(True, "CUDA only: bfloat16 autocast")
    channels_last: bool = _option(True, "channels-last tensors (faster convolutions on CPU and CUDA)")
    compile: bool = _option(
        False, "torch.compile the network (Inductor; on a CPU it needs a C++ compiler): minutes of compiling at the "
        "start; measure first (python tools/training_speed.py --compile): on 2 CPU cores CGNet steps ran 0.93x "
        "as fast (cpu_training_kernels already compiles its memory-bound layers), ContextNet's 0.40-0.55x; if "
        "compiling fails, training goes on uncompiled"
    )
    cpu_training_kernels: bool = _option(
        True, "CPU: CGNet's BatchNorm + PReLU pairs and dilated channel-wise convolutions train through compiled "
        "kernels (training.cpu_training; seconds of compiling at the first step, needs a C++ compiler, else they run "
        "uncompiled)"
    )
    threads: int | None = _option(None, "CPU threads for PyTorch; none: PyTorch's default")
    keep_freed_memory: bool = _option(
        True, "CPU: keep freed memory in the process (glibc malloc) instead of faulting it in again every step"
    )
    device: str | None = _option(None, "cpu | cuda | cuda:N; none: cuda if available")
    out: str = _option("runs/train", "output folder (checkpoints, history.csv, curves.png)")
    max_steps: int | None = _option(None, "stop after this many optimizer steps (smoke tests)")
    export: str | None = _option(None, "weights/<name>.safetensors written at the end")
    init: str | None = _option(None, "start from these weights (.safetensors) with a fresh schedule")
    cache_gb: float = _option(4.0, "decode the training images once and keep them in memory up to this size; 0: off")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            setattr(self, item.name, _coerce(item.name, getattr(self, item.name), hints[item.name]))
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise TrainingError(f"{key} {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("batch_size", "epochs"):
            if getattr(self, key) < 1:
                raise TrainingError(f"{key} must be at least 1, not {getattr(self, key)}")
        if not 0.0 <= self.cutmix <= 1.0:
            raise TrainingError(f"cutmix is a probability per crop, in [0, 1] (0: off), not {self.cutmix}")
        if not 0.0 <= self.camera_effects <= 2.0:
            raise TrainingError(
                f"camera_effects is a strength in [0, 2] (0: off; 1: blur up to sigma 1.5 px, noise up to 8 of 255, "
                f"gamma 1/1.5-1.5), not {self.camera_effects}"
            )
        if self.lovasz_weight < 0:
            raise TrainingError(f"lovasz_weight must be at least 0 (0: off), not {self.lovasz_weight}")
        if not 0.0 <= self.ohem_threshold < 1.0 or not 0.0 < self.ohem_min_kept <= 1.0:
            raise TrainingError(
                f"ohem_threshold must be in [0, 1) (0: off) and ohem_min_kept in (0, 1], not {self.ohem_threshold} "
                f"and {self.ohem_min_kept}"
            )
        if self.distill_weight <= 0 or self.distill_temperature <= 0:
            raise TrainingError(
                f"distill_weight and distill_temperature must be above 0, not {self.distill_weight} and "
                f"{self.distill_temperature} (without a teacher there is no distillation)"
            )
        if self.teacher_shares and len(self.teacher_shares) != len(self.teacher):
            raise TrainingError(
                f"teacher_shares: one share per teacher ({len(self.teacher)}), not {self.teacher_shares}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise TrainingError(f"ema_decay must be in [0, 1) (0: off), not {self.ema_decay}")

    @classmethod
    def keys(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainingConfig:
        unknown = set(values) - set(cls.keys())
        if unknown:
            raise TrainingError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(cls.keys())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, bool, None, list, tuple) that ``torch.load(weights_only=True)`` reads."""
        return dataclasses.asdict(self)

    def updated(self, **values: Any) -> TrainingConfig:
        """A copy with ``values`` changed (``None`` values leave a field as it is)."""
        return self.from_dict({**self.to_dict(), **{k: v for k, v in values.items() if v is not None}})


def _coerce(key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            if isinstance(value, str) or len(value) != len(args):
                raise ValueError
            return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
        if origin is list:
            if value is None:  # checkpoints of runs before a field became a list (teacher: none)
                return []
            (item,) = args or (str,)
            return [_coerce(key, v, item) for v in ([value] if isinstance(value, str) else value)]
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", None) or str(hint)
        raise TrainingError(f"{key}: expected {name}, got {value!r}") from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """The defaults, updated by the YAML recipe at ``path``, updated by ``overrides`` (``None`` values skipped)."""
    values: dict[str, Any] = {}
    if path:
        try:
            recipe = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise TrainingError(f"cannot read recipe {path}: {error}") from error
        if not isinstance(recipe, dict):
            raise TrainingError(f"{path}: a recipe is a mapping of keys to values")
        TrainingConfig.from_dict(recipe, str(path))  # unknown keys and bad values, named by the file
        values.update(recipe)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainingConfig.from_dict(values, str(path) if path else "options")


def model_from_config(config: TrainingConfig, num_classes: int, training: bool) -> nn.Module:
    """The recipe's network; in training, ContextNet gets the auxiliary head its aux loss needs."""
    extra: dict[str, Any] = {"dropout": config.dropout} if config.dropout is not None else {}
    if training and config.model == "contextnet" and config.aux_weight:
        extra["aux_classifier"] = True
    return build_model(config.model, num_classes, variant=config.variant, **extra)
