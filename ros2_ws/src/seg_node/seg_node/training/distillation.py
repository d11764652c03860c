"""Knowledge distillation: a trained network (the *teacher*) whose per-pixel class probabilities the
network in training (the *student*) learns besides the labels.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015): the student's loss gains
``T^2 * KL(softmax(teacher / T) || softmax(student / T))``; the softened probabilities carry how alike the
classes look to the teacher (a Pole pixel that is nearly Building), which a one-hot label does not. For
segmentation the term is taken per pixel ("pixel-wise distillation", Liu et al., "Structured Knowledge
Distillation for Semantic Segmentation", CVPR 2019), here over the labelled pixels of the crop: padding
and void carry nothing a student is scored on.

The teacher sees the student's batch, re-normalised to its own mean and standard deviation, in eval mode
and without gradients. Its training splits count as seen by the student (``training.lineage``): a
train-only twin needs a train-only teacher for its val figure to be one on unseen frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..weights import WeightsError, WeightsInfo, file_sha256, load_weights
from .config import TrainingError


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over the labelled pixels of ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    ``student_logits``, ``teacher_logits``: (N, C, H, W); ``labels``: (N, H, W), ``ignore_index`` where
    unlabelled. Zero (with the student's graph kept) when no pixel is labelled.
    """
    labelled = (labels != ignore_index).unsqueeze(1)
    student = torch.log_softmax(student_logits / temperature, dim=1)
    teacher = torch.log_softmax(teacher_logits / temperature, dim=1)
    per_pixel = (teacher.exp() * (teacher - student)).sum(dim=1, keepdim=True)
    count = labelled.sum()
    return temperature**2 * (per_pixel * labelled).sum() / count.clamp(min=1)


class TeacherMember(nn.Module):
    """One trained network of a teacher, fed batches normalised with the student's ``mean`` and ``std``."""

    def __init__(
        self,
        weights_path: str | Path,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool,
    ) -> None:
        super().__init__()
        try:
            network, info = load_weights(weights_path)
        except (WeightsError, OSError) as error:
            raise TrainingError(f"teacher: {error}") from error
        if info.num_classes != num_classes:
            raise TrainingError(
                f"teacher {weights_path} predicts {info.num_classes} classes, the training set has {num_classes}"
            )
        self.info: WeightsInfo = info
        self.name = Path(weights_path).stem
        # the name alone would not tell which weights taught: shipped files are replaced under their names
        self.sha256 = file_sha256(weights_path)
        network = network.to(device).eval().requires_grad_(False)
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        # student-normalised x -> teacher-normalised: (x * std_s + mean_s - mean_t) / std_t
        student_mean, student_std = torch.tensor(mean), torch.tensor(std)
        teacher_mean, teacher_std = torch.tensor(info.mean), torch.tensor(info.std)
        self.register_buffer("scale", (student_std / teacher_std).view(1, -1, 1, 1).to(device), persistent=False)
        self.register_buffer(
            "shift", ((student_mean - teacher_mean) / teacher_std).view(1, -1, 1, 1).to(device), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images * self.scale + self.shift)


class Teacher(nn.Module):
    """Trained weights that give the logits the student distils, for batches normalised with the student's
    ``mean`` and ``std``.

    ``weights_paths`` is one file or several: an ensemble, whose class probabilities are averaged (in
    proportion to ``shares``, equally when it is empty). With ``flip`` each member's probabilities are also
    averaged with those of the mirrored batch (the test-time flip, at twice the member's cost); either makes a
    teacher stronger than its best member (docs/training.md). An averaged teacher gives the log of its mean
    probabilities as its logits (``softmax(log p) = p``); one member without the flip gives its own logits.
    """

    def __init__(
        self,
        weights_paths: str | Path | Sequence[str | Path],
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool,
        *,
        shares: Sequence[float] = (),
        flip: bool = False,
    ) -> None:
        super().__init__()
        paths = [weights_paths] if isinstance(weights_paths, (str, Path)) else list(weights_paths)
        if not paths:
            raise TrainingError("teacher: no weights given")
        weights = [float(share) for share in shares] or [1.0] * len(paths)
        if len(weights) != len(paths) or min(weights) <= 0:
            raise TrainingError(
                f"teacher_shares: one share above 0 per teacher ({len(paths)} given), not {list(shares)}"
            )
        self.members = nn.ModuleList(
            TeacherMember(path, num_classes, mean, std, device, channels_last) for path in paths
        )
        self.shares = [weight / sum(weights) for weight in weights]
        self.flip = flip

    @property
    def splits(self) -> list[str]:
        """Every split any member trained on."""
        return list(dict.fromkeys(split for member in self.members for split in member.info.splits))

    @property
    def drives(self) -> list[str] | None:
        """Every drive any member trained on; None when a member's JSON does not record its drives."""
        recorded = [member.info.training.get("drives") for member in self.members]
        if any(drives is None for drives in recorded):
            return None
        return sorted({drive for drives in recorded for drive in drives})

    @torch.no_grad()
    def forward(self, images: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The teacher's logits for the student's ``images``, at the student logits' spatial ``size``."""
        if len(self.members) == 1 and not self.flip:
            logits = self.members[0](images)
        else:
            probabilities = 0.0
            mirrored_images = images.flip(3) if self.flip else None  # one copy of the batch for all members
            for member, share in zip(self.members, self.shares, strict=True):
                member_probabilities = member(images).softmax(1)
                if mirrored_images is not None:
                    mirrored = member(mirrored_images).softmax(1).flip(3)
                    member_probabilities = (member_probabilities + mirrored) / 2
                probabilities = probabilities + share * member_probabilities
            logits = probabilities.clamp(min=torch.finfo(probabilities.dtype).tiny).log()
        if logits.shape[2:] != size:
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def provenance(self) -> dict[str, object]:
        """What a checkpoint records of the teacher: its file's name and content hash (lists for an ensemble) and
        the splits and drives it trained on."""
        if len(self.members) == 1:
            (member,) = self.members
            return {"weights": member.name, "sha256": member.sha256, "splits": self.splits, "drives": self.drives}
        return {
            "weights": [member.name for member in self.members],
            "sha256": [member.sha256 for member in self.members],
            "splits": self.splits,
            "drives": self.drives,
        }
