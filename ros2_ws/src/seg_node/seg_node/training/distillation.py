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


class Teacher(nn.Module):
    """Trained weights that give the logits the student distils, for batches normalised with the student's
    ``mean`` and ``std``."""

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

    @torch.no_grad()
    def forward(self, images: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The teacher's logits for the student's ``images``, at the student logits' spatial ``size``."""
        logits = self.network(images * self.scale + self.shift)
        if logits.shape[2:] != size:
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def provenance(self) -> dict[str, object]:
        """What a checkpoint records of the teacher: its file's name and content hash and its training splits."""
        return {"weights": self.name, "sha256": self.sha256, "splits": list(self.info.splits)}
