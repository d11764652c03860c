"""The training loss: cross-entropy (class-weighted or not, over every pixel or only the hard ones), optionally
plus the Lovász-softmax loss.

Cross-entropy trains every pixel alike, so the large classes (Road, Sky, Building) dominate it while
mIoU weighs each class's IoU equally. The Lovász-softmax loss (Berman, Rannen Triki and Blaschko,
"The Lovász-Softmax loss: A tractable surrogate for the optimization of the intersection-over-union
measure in neural networks", CVPR 2018) is the Lovász extension of each class's Jaccard loss
``1 - IoU``, applied to the softmax probabilities and averaged over the classes present in the batch:
on one-hot predictions it *is* the mean of ``1 - IoU``; in between it is convex and piecewise linear
in the per-pixel errors. The paper fine-tunes cross-entropy-trained networks with it.

Online hard example mining (OHEM; Shrivastava, Gupta and Girshick, CVPR 2016, per pixel as real-time
segmentation networks train it, e.g. BiSeNet, Yu et al., ECCV 2018) averages the cross-entropy over the
pixels the network still gets wrong or barely right: those whose true class has a probability below
``ohem_threshold`` (0.7 in BiSeNet's code), and at least the ``ohem_min_kept`` share of the labelled pixels
with the highest loss. Pixels of Road or Sky that are already right stop diluting the few of Pole or
SignSymbol that are not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOVASZ_STRIDE = 2
# the least share of the labelled pixels OHEM keeps, hardest first, as BiSeNet's code keeps them
OHEM_MIN_KEPT = 1 / 16


def lovasz_softmax(probabilities: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean over the classes present in ``labels`` of the Lovász extension of ``1 - IoU`` (the whole batch as
    one image, the paper's ``per_image=False``).

    ``probabilities``: (N, C, H, W), summing to 1 over C; ``labels``: (N, H, W) class ids, ``ignore_index`` for
    pixels that count for nothing. Returns a scalar; zero when no pixel is labelled.
    """
    classes = probabilities.shape[1]
    # class-major (C, pixels): each class's errors are sorted along a contiguous row
    probabilities = probabilities.transpose(0, 1).reshape(classes, -1)
    labels = labels.reshape(-1)
    labelled = labels != ignore_index
    probabilities, labels = probabilities[:, labelled], labels[labelled]
    if labels.numel() == 0:
        return probabilities.sum() * 0.0  # keeps the graph: backward() still works on a batch of void
    foreground = nn.functional.one_hot(labels, classes).t().to(probabilities.dtype)  # (C, P)
    errors = (foreground - probabilities).abs()
    errors_sorted, order = errors.sort(dim=1, descending=True)
    weights = _lovasz_gradient(foreground.gather(1, order))
    per_class = (errors_sorted * weights).sum(dim=1)
    present = foreground.sum(dim=1) > 0
    return per_class[present].mean()


def _lovasz_gradient(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """Per row, the increments of the Jaccard loss as the pixels are taken in error order (Berman et al., Alg. 1):
    the weights that make the Lovász extension a dot product with the sorted errors."""
    positives = foreground_sorted.sum(dim=1, keepdim=True)
    intersection = positives - foreground_sorted.cumsum(dim=1)
    union = positives + (1.0 - foreground_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def hard_pixel_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    threshold: float,
    min_kept: float,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over the hard labelled pixels only (OHEM): those whose true class's probability is
    below ``threshold``, and at least the ``min_kept`` share (0-1) of the labelled pixels, the highest losses
    first. With ``class_weights`` the mean is weighted as ``nn.CrossEntropyLoss`` weighs it; which pixels are hard
    is decided by the unweighted loss. Zero (with the graph kept) when no pixel is labelled.
    """
    losses = nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none").flatten()
    labels = labels.flatten()
    labelled = labels != ignore_index
    count = int(labelled.sum())
    if count == 0:
        return logits.sum() * 0.0
    losses, labels = losses[labelled], labels[labelled]
    with torch.no_grad():
        # loss > -log(threshold) <=> the true class's probability < threshold
        hard = losses > -math.log(threshold)
        least = min(count, max(1, math.ceil(min_kept * count)))
        if int(hard.sum()) < least:
            hard = torch.zeros_like(hard)
            hard[losses.topk(least, sorted=False).indices] = True
    if class_weights is None:
        return losses[hard].mean()
    weights = class_weights[labels[hard]]
    return (losses[hard] * weights).sum() / weights.sum()


class SegmentationLoss(nn.Module):
    """Cross-entropy over the logits (over the hard pixels only with ``ohem_threshold`` above 0), plus
    ``lovasz_weight`` times the Lovász-softmax loss (0: cross-entropy alone)."""

    def __init__(
        self,
        class_weights: torch.Tensor | None,
        ignore_index: int,
        lovasz_weight: float = 0.0,
        ohem_threshold: float = 0.0,
        ohem_min_kept: float = OHEM_MIN_KEPT,
    ) -> None:
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(weight=class_weights, ignore_index=ignore_index)
        self.ignore_index = ignore_index
        self.lovasz_weight = lovasz_weight
        self.ohem_threshold = ohem_threshold
        self.ohem_min_kept = ohem_min_kept

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.ohem_threshold:
            loss = hard_pixel_cross_entropy(
                logits, labels, self.ignore_index, self.ohem_threshold, self.ohem_min_kept, self.cross_entropy.weight
            )
        else:
            loss = self.cross_entropy(logits, labels)
        if self.lovasz_weight:
            # every LOVASZ_STRIDE-th pixel each way: sorting is the term's cost (about 1 s per 11 M values on a
            # core: a CGNet step of 8 crops of 360x360 would take 1.7x as long), and both networks' logits are
            # bilinear up-samplings of 1/8-resolution ones, so the sub-grid loses little
            step = LOVASZ_STRIDE
            probabilities = logits[:, :, ::step, ::step].softmax(dim=1)
            lovasz = lovasz_softmax(probabilities, labels[:, ::step, ::step], self.ignore_index)
            loss = loss + self.lovasz_weight * lovasz
        return loss
