"""Weights on disk: ``<name>.safetensors`` (tensors) beside ``<name>.json`` (what they are).

Loading never unpickles. The JSON names the architecture and variant, the
classes with names and colours, the input normalisation, the network input
size, the data set and splits the weights saw, the mIoU on a validation
list they never trained on (and which list), epochs and commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SegNodeError
from .models import MODELS, ModelArgumentError, build_model, check_model_arguments
from .share import share_folders

DEFAULT_WEIGHTS_NAME = "cgnet_camvid"
# The drives of CamVid's own lists (file names <drive>_<frame>; seg-split-drives writes a list per drive)
CAMVID_SPLIT_DRIVES = {"train": ("0001TP", "0006R0", "0016E5"), "val": ("0016E5",)}
INPUT_SIDE_RANGE = (16, 4096)  # pixels; a network input outside this is a typo, not a camera
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


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
    val_list: str | None = "val.txt"  # the list val_miou was measured on (seg-eval --list); files before it: val
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
        """The card of a weights file, checked field by field; WeightsError names the first bad field."""
        if not isinstance(data, dict):
            raise WeightsError("the JSON is not an object of fields")
        info = cls(
            architecture=_field(data, "architecture", str),
            variant=_field(data, "variant", dict),
            classes=_field(data, "classes", _classes),
            mean=_field(data, "mean", tuple),
            std=_field(data, "std", tuple),
            input_size=_field(data, "input_size", tuple),
            dataset=_field(data, "dataset", str),
            splits=_field(data, "splits", list),
            ignore_index=_field(data, "ignore_index", lambda v: v, None),
            val_miou=_field(data, "val_miou", lambda v: v, None),
            val_list=_field(data, "val_list", lambda v: v, "val.txt"),
            epochs=_field(data, "epochs", int, 0),
            commit=_field(data, "commit", str, ""),
            training=_field(data, "training", dict, {}),
        )
        check_card(info)
        return info


_REQUIRED = object()


def _field(data: dict[str, Any], name: str, convert: Any, default: Any = _REQUIRED) -> Any:
    """``convert(data[name])``; WeightsError naming the field when it is missing or does not convert."""
    if name not in data:
        if default is _REQUIRED:
            raise WeightsError(f"field {name!r} is missing")
        return convert(default)  # a fresh copy of a mutable default
    try:
        return convert(data[name])
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"field {name!r} is malformed ({error!r}): {str(data[name])[:80]}") from error


def _classes(entries: list[dict[str, Any]]) -> list[SegClass]:
    return [SegClass(int(c["id"]), str(c["name"]), tuple(c["color"])) for c in entries]


def _numbers(values: tuple, count: int) -> bool:
    return len(values) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def check_card(info: WeightsInfo) -> None:
    """Raise WeightsError naming the field of ``info`` that no network could use, before anything is built."""
    if info.architecture not in MODELS:
        raise WeightsError(f"field 'architecture' is {info.architecture!r}, not one of {', '.join(MODELS)}")
    if not info.classes:
        raise WeightsError("field 'classes' is empty")
    for segment_class in info.classes:
        if len(segment_class.color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in segment_class.color):
            raise WeightsError(f"field 'classes': class {segment_class.name!r} has colour {list(segment_class.color)}, "
                               "not three integers 0-255")
    if not _numbers(info.mean, 3):
        raise WeightsError(f"field 'mean' is {list(info.mean)}, not three finite numbers (RGB, 0-255 scale)")
    if not _numbers(info.std, 3) or min(info.std) <= 0:
        raise WeightsError(f"field 'std' is {list(info.std)}, not three finite positive numbers (RGB, 0-255 scale)")
    low, high = INPUT_SIDE_RANGE
    if not (len(info.input_size) == 2 and all(isinstance(v, int) and low <= v <= high for v in info.input_size)):
        raise WeightsError(f"field 'input_size' is {list(info.input_size)}, not [height, width] "
                           f"of integers from {low} to {high}")
    if info.ignore_index is not None and not (isinstance(info.ignore_index, int) and 0 <= info.ignore_index <= 255):
        raise WeightsError(f"field 'ignore_index' is {info.ignore_index!r}, not null or an integer 0-255")
    try:
        check_model_arguments(info.architecture, info.num_classes, info.variant)
    except ModelArgumentError as error:
        raise WeightsError(f"field 'variant' (or 'classes'): {error}") from error


def info_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def read_info(weights_path: str | Path) -> WeightsInfo:
    path = info_path(weights_path)
    if not path.is_file():
        raise WeightsError(f"{path} is missing: every weights file needs its JSON beside it")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from error
    try:
        return WeightsInfo.from_dict(data)
    except WeightsError as error:
        raise WeightsError(f"{path}: {error}") from error


def _safetensors_load_file() -> Callable[[str], dict[str, torch.Tensor]] | None:
    try:
        from safetensors.torch import load_file
    except ImportError:  # the format is simple enough to read here (a GPU machine may lack the package)
        return None
    return load_file


def tensor_reader() -> str:
    """Which reader ``read_tensors`` uses on this machine, for reports."""
    return "safetensors" if _safetensors_load_file() else "built-in reader; safetensors is not installed"


def read_tensors(weights_path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, by the safetensors package or, where it is not installed, by
    ``parse_safetensors``; WeightsError for a missing or damaged file. Nothing is unpickled either way."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path} does not exist")
    load_file = _safetensors_load_file()
    if load_file is None:
        return parse_safetensors(weights_path)
    try:
        return load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own untyped errors for damaged files
        raise WeightsError(f"{weights_path} is not a readable safetensors file: {error}") from error


def parse_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The safetensors format by hand: 8-byte little-endian header length, JSON header, raw little-endian data."""
    data = path.read_bytes()

    def damaged(reason: str) -> WeightsError:
        return WeightsError(f"{path} is not a readable safetensors file: {reason}")

    if len(data) < 8:
        raise damaged("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise damaged(f"its header claims {length} bytes, the file has {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + length])
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(f"its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            begin, end = (int(v) for v in entry["data_offsets"])
            shape = [int(v) for v in entry["shape"]]
        except (KeyError, TypeError, ValueError) as error:
            raise damaged(f"tensor {name!r} has no valid dtype, shape and data_offsets ({error!r})") from error
        expected = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(body) or end - begin != expected:
            raise damaged(f"tensor {name!r} of shape {shape} has offsets {begin}-{end} that do not fit it or the file")
        raw = bytearray(body[begin:end])  # a writable copy that the tensor owns
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


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
    weights_path = Path(weights_path)
    info = read_info(weights_path) if info is None else info
    check_compatible(model, info, weights_path)
    state = read_tensors(weights_path)
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
        trained = set(info.training.get("drives") or
                      [drive for split in info.splits for drive in CAMVID_SPLIT_DRIVES.get(split, ())])
        same_drives = sorted(trained & set(CAMVID_SPLIT_DRIVES.get(scored_split, ())))
        if info.dataset == "camvid" and same_drives:
            note += (f", but drive {', '.join(same_drives)}, which they come from, was in training: "
                     "a same-drive figure, not one on a new road")
    return {"dataset": info.dataset, "splits": list(info.splits), "saw_these_frames": seen, "note": note}
