"""CutMix for segmentation: a box of another image of the batch, and its labels, pasted over an image.

CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
ICCV 2019) cuts a box out of one training image and fills it with the same box of another; for segmentation
the labels are cut and pasted alike (French et al., "Semi-supervised semantic segmentation needs strong,
varied perturbations", BMVC 2020), so the loss needs no mixing. With few training images (CamVid's 367)
every batch becomes scenes that were never photographed, and a teacher (``training.distillation``), which
sees the mixed batch as the student does, labels them consistently ("function matching", Beyer et al.,
"Knowledge distillation: A good teacher is patient and consistent", CVPR 2022).

The box of a sample covers a share ``1 - lambda`` of the crop, ``lambda`` uniform as in the paper (so the
share is too), with the crop's aspect ratio, centred anywhere and clipped at the border. It is mixed on the
device, after augmentation and normalisation, so every data path mixes alike; the random values come from a
generator seeded by (seed, step, process), as the crops are by (seed, epoch, sample), so a resumed run mixes as
an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def mixing_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The generator of one optimizer step's boxes: the same (seed, step, process), the same boxes."""
    return np.random.default_rng([seed, step, rank])


def cut_mix(
    images: torch.Tensor, labels: torch.Tensor, probability: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (N, C, H, W) and ``labels`` (N, H, W) with, for each sample and with ``probability``, a random
    box of another sample of the batch pasted over both (new tensors; the inputs are left as they are)."""
    count, height, width = labels.shape
    if count < 2 or probability <= 0.0:
        return images, labels
    mixed = rng.random(count) < probability
    # a partner other than the sample itself: the batch shifted by 1 .. count-1 places
    shift = int(rng.integers(1, count))
    box_shares = rng.random(count)  # 1 - lambda: the share of the crop the box covers
    centres = rng.random((count, 2))
    source_images, source_labels = images, labels
    images, labels = images.clone(), labels.clone()
    for index in np.flatnonzero(mixed).tolist():
        side = math.sqrt(box_shares[index])
        box_h, box_w = round(height * side), round(width * side)
        centre_y, centre_x = centres[index, 0] * height, centres[index, 1] * width
        top, bottom = max(0, round(centre_y - box_h / 2)), min(height, round(centre_y + box_h / 2))
        left, right = max(0, round(centre_x - box_w / 2)), min(width, round(centre_x + box_w / 2))
        partner = (index + shift) % count
        images[index, :, top:bottom, left:right] = source_images[partner, :, top:bottom, left:right]
        labels[index, top:bottom, left:right] = source_labels[partner, top:bottom, left:right]
    return images, labels
