"""The training data: the recipe's data set, an in-memory cache of decoded images, the augmented TrainingSet."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..datasets import DatasetSpec, camvid, cityscapes, image_folder
from ..engine.graph import Preprocess
from ..progress import progress_bar
from .augment import Augmentation, augment, augment_crop
from .config import TrainingConfig, TrainingError


def dataset_spec(config: TrainingConfig, lists: str | list[str]) -> DatasetSpec:
    if config.dataset == "camvid":
        return camvid(config.data, lists)
    if config.dataset == "cityscapes":
        names = [lists] if isinstance(lists, str) else lists
        specs = [cityscapes(config.data, name) for name in names]
        specs[0].pairs = [pair for spec in specs for pair in spec.pairs]
        return specs[0]
    if config.dataset == "folder":
        if not config.classes:
            raise TrainingError("the folder data set needs --classes (a YAML or JSON class table)")
        root = Path(config.data)
        return image_folder(root / "images", root / "labels", config.classes)
    raise TrainingError(f"unknown dataset {config.dataset!r}; use camvid, cityscapes or folder")


class ImageCache:
    """Every image and label of a split decoded once into uint8 arrays; reads like the DatasetSpec it holds.

    Images of one size are kept in one array (N, H, W, 3), so that data loader processes share
    them with the parent (copy-on-write) and the CUDA path can upload them as one tensor.
    """

    def __init__(self, spec: DatasetSpec, show_progress: bool = True) -> None:
        self.spec = spec
        self.name, self.pairs, self.classes = spec.name, spec.pairs, spec.classes
        self.ignore_index, self.num_classes = spec.ignore_index, spec.num_classes
        images, labels = [], []
        for index in progress_bar(range(len(spec.pairs)), desc="decoding", unit="image", disable=not show_progress):
            image, label = spec.read(index)
            images.append(image)
            labels.append(label)
        same_size = len({image.shape for image in images}) == 1
        self.images: np.ndarray | list[np.ndarray] = np.stack(images) if same_size else images
        self.labels: np.ndarray | list[np.ndarray] = np.stack(labels) if same_size else labels

    @staticmethod
    def fits(spec: DatasetSpec, limit_gb: float) -> bool:
        """Whether the decoded split (estimated from its first sample) stays below ``limit_gb``."""
        if limit_gb <= 0 or not spec.pairs:
            return False
        image, _ = spec.read(0)
        return image.shape[0] * image.shape[1] * 4 * len(spec.pairs) <= limit_gb * 2**30

    @property
    def uniform(self) -> bool:
        return isinstance(self.images, np.ndarray)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]


class TrainingSet(Dataset):
    """Augmented crops, seeded per (seed, epoch, index): HWC uint8 images and HW int64 labels.

    ``source`` is a DatasetSpec (each image read from disk when used) or an ImageCache; ``fast``
    picks ``augment_crop`` over the original ``augment``. Normalisation happens on the batch
    (``normalize``), in the training process, where it is one vectorised operation.
    """

    def __init__(
        self, source: DatasetSpec | ImageCache, augmentation: Augmentation, seed: int, fast: bool = True
    ) -> None:
        self.source = source
        self.augmentation = augmentation
        self.ignore_index = source.ignore_index
        self.seed = seed
        self.fast = fast
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.source.read(index)
        function = augment_crop if self.fast else augment
        image, label = function(image, label, self.augmentation, self.ignore_index, self.rng(index))
        return torch.from_numpy(image), torch.from_numpy(label.astype(np.int64))


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, H, W, 3) uint8 to normalised (N, 3, H, W) float; the permuted view is channels-last already."""
    out = (images.permute(0, 3, 1, 2).float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def whole_frames(
    source: DatasetSpec | ImageCache, preprocess: Preprocess, batch_size: int, device: torch.device | str
) -> Iterator[torch.Tensor]:
    """Every image of ``source`` whole and unaugmented, as inference sees it: through the engine's ``preprocess``
    (resized to its network size, normalised), in batches of up to ``batch_size`` on ``device``."""
    for start in range(0, len(source.pairs), batch_size):
        indices = range(start, min(start + batch_size, len(source.pairs)))
        # one image at a time: a data set's images may differ in size until preprocess resizes them
        yield torch.cat([preprocess(torch.from_numpy(source.read(index)[0]).to(device)[None]) for index in indices])


class ListSampler(Sampler[int]):
    """A fixed order of indices: one epoch's shuffled order, less the batches already done before a resume."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
