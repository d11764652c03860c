"""Weights on disk: ``<name>.safetensors`` (tensors) beside ``<name>.json`` (what they are).

Loading never unpickles. The JSON names the architecture and variant, the
classes with names and colours, the input normalisation, the network input
size, the data set and splits the weights saw, the val mIoU (only for
weights that never saw val), epochs and commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import SegNodeError
from .models import build_model
from .share import share_folders

DEFAULT_WEIGHTS_NAME = "cgnet_camvid"


class WeightsError(SegNodeError, RuntimeError):
    """A weights file that is missing, unreadable or inconsistent with its JSON."""


class WeightsMismatchError(WeightsError):
    """Weights of one architecture or class count loaded into another."""


def describe_model(architecture: str, variant: dict[str, Any], num_classes: int) -> str:
    """``cgnet (m=3, n=21) with 11 classes``: how weights and models are named in messages."""
    settings = ", ".join(f"{k}={v}" for k, v in variant.items())
    return f"{architecture} ({settings}) with {num_classes} classes"


@dataclass(frozen=True)
class SegClass:
    id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class WeightsInfo:
    """The JSON beside a weights file."""

    architecture: str
    variant: dict[str, Any]
    classes: list[SegClass]
    # Normalisation of RGB input in 0..255: (pixel - mean) / std.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]  # (height, width) the network was trained and evaluated at
    dataset: str
    splits: list[str]
    ignore_index: int | None = None
    val_miou: float | None = None
    epochs: int = 0
    commit: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    def describe(self) -> str:
        return describe_model(self.architecture, self.variant, self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["num_classes"] = self.num_classes
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsInfo:
        try:
            return cls(
                architecture=data["architecture"],
                variant=dict(data["variant"]),
                classes=[SegClass(int(c["id"]), str(c["name"]), tuple(c["color"])) for c in data["classes"]],
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
                input_size=tuple(data["input_size"]),
                dataset=data["dataset"],
                splits=list(data["splits"]),
                ignore_index=data.get("ignore_index"),
                val_miou=data.get("val_miou"),
                epochs=int(data.get("epochs", 0)),
                commit=data.get("commit", ""),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"weights JSON lacks or mangles a field: {error!r}") from error


def info_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def read_info(weights_path: str | Path) -> WeightsInfo:
    path = info_path(weights_path)
    if not path.is_file():
        raise WeightsError(f"{path} is missing: every weights file needs its JSON beside it")
    try:
        return WeightsInfo.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from error


def model_description(model: nn.Module, num_classes: int) -> str:
    return describe_model(getattr(model, "name", type(model).__name__), getattr(model, "variant", {}), num_classes)


def _classifier_classes(model: nn.Module) -> int:
    return model.classifier.out_channels


def check_compatible(model: nn.Module, info: WeightsInfo, weights_path: str | Path) -> None:
    """Raise WeightsMismatchError naming both sides when ``info`` does not describe ``model``."""
    model_variant = {k: v for k, v in getattr(model, "variant", {}).items()}
    same = (
        getattr(model, "name", None) == info.architecture
        and model_variant == {k: info.variant.get(k) for k in model_variant}
        and _classifier_classes(model) == info.num_classes
    )
    if not same:
        raise WeightsMismatchError(
            f"{weights_path} holds {info.describe()}, "
            f"but the model is {model_description(model, _classifier_classes(model))}"
        )


def load_state(model: nn.Module, weights_path: str | Path, info: WeightsInfo | None = None) -> nn.Module:
    """Load the tensors of ``weights_path`` into ``model`` after checking they belong to it."""
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    info = read_info(weights_path) if info is None else info
    check_compatible(model, info, weights_path)
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path} does not exist")
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own untyped errors for damaged files
        raise WeightsError(f"{weights_path} is not a readable safetensors file: {error}") from error
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of other shapes than the JSON's model has
        raise WeightsMismatchError(
            f"{weights_path} does not fit {model_description(model, info.num_classes)} "
            f"that its JSON describes: {str(error).splitlines()[-1].strip()}"
        ) from error
    if missing or unexpected:
        raise WeightsMismatchError(
            f"{weights_path} does not fit {model_description(model, info.num_classes)}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


def load_weights(weights_path: str | Path) -> tuple[nn.Module, WeightsInfo]:
    """Build the model the JSON describes and load its tensors; the model is in eval mode."""
    info = read_info(weights_path)
    model = build_model(info.architecture, info.num_classes, **info.variant)
    return load_state(model, weights_path, info).eval(), info


def save_weights(model: nn.Module, info: WeightsInfo, weights_path: str | Path) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json``; training-only tensors are left out."""
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    check_compatible(model, info, weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("aux_")}
    save_file(state, str(weights_path), metadata={"architecture": info.architecture})
    info_path(weights_path).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return weights_path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_search_path() -> list[Path]:
    """Folders searched for shipped weights: the ROS share folder, the environment's, the repository's."""
    folders = [folder / "weights" for folder in share_folders()]
    extra = os.environ.get("SEG_NODE_WEIGHTS_DIR")
    return ([Path(extra)] if extra else []) + folders


def find_weights(name_or_path: str = "") -> Path:
    """Resolve a weights path, or a shipped model's name (default ``cgnet_camvid``), to a file."""
    candidate = Path(name_or_path) if name_or_path else None
    if candidate is not None and (candidate.suffix or os.sep in name_or_path):
        if not candidate.is_file():
            raise WeightsError(f"weights file {candidate} does not exist")
        return candidate
    name = name_or_path or DEFAULT_WEIGHTS_NAME
    searched = weights_search_path()
    for folder in searched:
        path = folder / f"{name}.safetensors"
        if path.is_file():
            return path
    raise WeightsError(f"no weights named {name!r}; looked for {name}.safetensors in " + ", ".join(map(str, searched)))


def training_note(info: WeightsInfo, scored_split: str | None) -> dict[str, Any]:
    """What ``info``'s weights were trained on, and whether that includes the frames scored (from
    ``scored_split`` of the same data set; None: unknown), with a sentence for reports beside an mIoU."""
    splits = "+".join(info.splits) or "?"
    seen = None if scored_split is None else scored_split in info.splits
    if seen is None:
        note = f"weights trained on {info.dataset} {splits}"
    elif seen:
        note = (f"weights trained on {info.dataset} {splits}, which includes these {scored_split} frames: "
                "this mIoU is not a figure on unseen frames")
    else:
        note = f"weights trained on {info.dataset} {splits} only: these {scored_split} frames were unseen"
    return {"dataset": info.dataset, "splits": list(info.splits), "saw_these_frames": seen, "note": note}
