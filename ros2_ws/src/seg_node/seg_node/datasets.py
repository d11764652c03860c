"""Training data: CamVid (SegNet layout), Cityscapes (gtFine), and a generic folder format.

Every data set becomes a list of (image path, label path) pairs, a class
table, an ignore index and a lookup table from stored label values to train
ids. Training augmentation lives in ``training/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from .errors import SegNodeError
from .weights import SegClass


class DatasetError(SegNodeError, ValueError):
    """A data set that cannot be read as described."""


CAMVID_CLASSES = [
    SegClass(0, "Sky", (128, 128, 128)),
    SegClass(1, "Building", (128, 0, 0)),
    SegClass(2, "Pole", (192, 192, 128)),
    SegClass(3, "Road", (128, 64, 128)),
    SegClass(4, "Pavement", (60, 40, 222)),
    SegClass(5, "Tree", (128, 128, 0)),
    SegClass(6, "SignSymbol", (192, 128, 128)),
    SegClass(7, "Fence", (64, 64, 128)),
    SegClass(8, "Car", (64, 0, 128)),
    SegClass(9, "Pedestrian", (64, 64, 0)),
    SegClass(10, "Bicyclist", (0, 128, 192)),
]
CAMVID_IGNORE = 11

# Cityscapes' 19 evaluation classes: (train id, name, colour, label id).
_CITYSCAPES = [
    ("road", (128, 64, 128), 7),
    ("sidewalk", (244, 35, 232), 8),
    ("building", (70, 70, 70), 11),
    ("wall", (102, 102, 156), 12),
    ("fence", (190, 153, 153), 13),
    ("pole", (153, 153, 153), 17),
    ("traffic light", (250, 170, 30), 19),
    ("traffic sign", (220, 220, 0), 20),
    ("vegetation", (107, 142, 35), 21),
    ("terrain", (152, 251, 152), 22),
    ("sky", (70, 130, 180), 23),
    ("person", (220, 20, 60), 24),
    ("rider", (255, 0, 0), 25),
    ("car", (0, 0, 142), 26),
    ("truck", (0, 0, 70), 27),
    ("bus", (0, 60, 100), 28),
    ("train", (0, 80, 100), 31),
    ("motorcycle", (0, 0, 230), 32),
    ("bicycle", (119, 11, 32), 33),
]
CITYSCAPES_CLASSES = [SegClass(i, name, color) for i, (name, color, _) in enumerate(_CITYSCAPES)]
CITYSCAPES_IGNORE = 255


def cityscapes_label_lut() -> np.ndarray:
    """Lookup table from Cityscapes label ids (``*_labelIds.png``) to the 19 train ids, 255 elsewhere."""
    lut = np.full(256, CITYSCAPES_IGNORE, dtype=np.uint8)
    for train_id, (_, _, label_id) in enumerate(_CITYSCAPES):
        lut[label_id] = train_id
    return lut


@dataclass
class DatasetSpec:
    """What a split of a data set is: files, classes, the ignored label, and how stored labels map to train ids."""

    name: str
    pairs: list[tuple[Path, Path]]
    classes: list[SegClass]
    ignore_index: int
    label_lut: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image and train-id label of sample ``index``."""
        image_path, label_path = self.pairs[index]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"cannot read image {image_path}")
        if label is None or label.ndim != 2:
            raise DatasetError(f"cannot read {label_path} as a single-channel label image")
        if label.shape != image.shape[:2]:
            raise DatasetError(f"{label_path} is {label.shape[::-1]} but {image_path} is {image.shape[1::-1]}")
        if self.label_lut is not None:
            label = self.label_lut[label]
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label


def read_pair_list(root: str | Path, list_file: str | Path) -> list[tuple[Path, Path]]:
    """A SegNet-style list: one ``image label`` pair per line, relative to ``root``."""
    root, list_file = Path(root), Path(list_file)
    if not list_file.is_absolute() and not list_file.is_file():
        list_file = root / list_file
    if not list_file.is_file():
        raise DatasetError(f"list file {list_file} does not exist")
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{list_file}:{number}: expected 'image label', got {line!r}")
        pairs.append((root / parts[0], root / parts[1]))
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} files of {list_file} are missing, e.g. {missing[0]}")
    if not pairs:
        raise DatasetError(f"{list_file} lists no pairs")
    return pairs


def drive_of(image: str | Path, separator: str = "_") -> str:
    """The drive a frame was filmed on: CamVid names its frames ``<drive>_<frame>`` (``0006R0_f02400.jpg``)."""
    name = Path(image).name
    if separator not in name:
        raise DatasetError(f"{image}: the file name names no drive as <drive>{separator}<frame>")
    return name.split(separator, 1)[0]


def lines_by_drive(root: str | Path, list_files: list[str], separator: str = "_") -> dict[str, list[str]]:
    """The ``image label`` lines of ``list_files`` grouped by drive, in the lists' order (drives sorted by name).

    A frame listed twice would train and validate on the same image, so it is refused.
    """
    root = Path(root)
    by_drive: dict[str, list[str]] = {}
    seen: dict[Path, str] = {}
    for list_file in list_files:
        for image, label in read_pair_list(root, list_file):
            if image in seen:
                raise DatasetError(f"{image} is listed twice: in {seen[image]} and in {list_file}")
            seen[image] = str(list_file)
            line = f"{image.relative_to(root)} {label.relative_to(root)}"
            by_drive.setdefault(drive_of(image, separator), []).append(line)
    return dict(sorted(by_drive.items()))


def write_drive_lists(by_drive: dict[str, list[str]], folder: str | Path) -> dict[str, Path]:
    """``drive_<name>.txt`` in ``folder`` (created if missing) for every drive of ``by_drive`` (``lines_by_drive``'s
    result), in the lists' ``image label`` format; returns each drive's list file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for drive, lines in by_drive.items():
        written[drive] = folder / f"drive_{drive}.txt"
        written[drive].write_text("".join(f"{line}\n" for line in lines))
    return written


def camvid(root: str | Path, list_files: str | list[str]) -> DatasetSpec:
    names = [list_files] if isinstance(list_files, str) else list_files
    pairs = [pair for name in names for pair in read_pair_list(root, name)]
    return DatasetSpec("camvid", pairs, CAMVID_CLASSES, CAMVID_IGNORE)


def cityscapes(root: str | Path, split: str) -> DatasetSpec:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    root = Path(root)
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise DatasetError(f"no images under {root / 'leftImg8bit' / split}/<city>/")
    pairs = []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DatasetError(f"{image} has no label {label}")
        pairs.append((image, label))
    return DatasetSpec("cityscapes", pairs, CITYSCAPES_CLASSES, CITYSCAPES_IGNORE, cityscapes_label_lut())


def read_class_table(path: str | Path) -> tuple[list[SegClass], int]:
    """A YAML or JSON class table: ``{classes: [{name, color: [r,g,b]}, ...], ignore_index: N}``."""
    path = Path(path)
    try:
        table = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
        classes = [
            SegClass(i, str(c["name"]), tuple(int(v) for v in c["color"])) for i, c in enumerate(table["classes"])
        ]
        return classes, int(table.get("ignore_index", 255))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as error:
        raise DatasetError(
            f"class table {path} is not {{classes: [{{name, color}}], ignore_index}}: {error}"
        ) from error


def image_folder(images: str | Path, labels: str | Path, class_table: str | Path) -> DatasetSpec:
    """Users' own data: images and label PNGs (values are class ids) matched by file stem."""
    images, labels = Path(images), Path(labels)
    label_by_stem = {p.stem: p for p in labels.glob("*.png")}
    pairs = []
    for image in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        if image.stem not in label_by_stem:
            raise DatasetError(f"{image} has no label {labels / (image.stem + '.png')}")
        pairs.append((image, label_by_stem[image.stem]))
    if not pairs:
        raise DatasetError(f"no images in {images}")
    classes, ignore_index = read_class_table(class_table)
    return DatasetSpec("folder", pairs, classes, ignore_index)


def class_support(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count of each class over the data set (ignored pixels left out), and how many frames hold it."""
    pixels = np.zeros(spec.num_classes, dtype=np.int64)
    frames = np.zeros(spec.num_classes, dtype=np.int64)
    for index in range(len(spec.pairs)):
        _, label = spec.read(index)
        counts = np.bincount(label.ravel(), minlength=256)[: spec.num_classes]
        pixels += counts
        frames += counts > 0
    return pixels, frames


def label_histogram(spec: DatasetSpec) -> np.ndarray:
    """Pixel count of each class over the data set (ignored pixels left out)."""
    return class_support(spec)[0]


def enet_class_weights(histogram: np.ndarray, c: float = 1.10) -> np.ndarray:
    """ENet's class weighting, as CGNet's code uses it: w = 1 / ln(c + p), p the class's pixel frequency."""
    frequency = histogram / max(1, histogram.sum())
    return (1.0 / np.log(c + frequency)).astype(np.float32)


def mean_std(spec: DatasetSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel RGB mean and standard deviation of the images, in 0..255."""
    total = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    for index in range(len(spec.pairs)):
        image, _ = spec.read(index)
        flat = image.reshape(-1, 3).astype(np.float64)
        total += flat.sum(0)
        squares += (flat**2).sum(0)
        pixels += flat.shape[0]
    mean = total / pixels
    std = np.sqrt(squares / pixels - mean**2)
    return tuple(round(float(v), 3) for v in mean), tuple(round(float(v), 3) for v in std)
