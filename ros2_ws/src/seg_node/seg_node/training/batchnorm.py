"""BatchNorm statistics recomputed for the weights a run ends with ("precise BN": Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm").

In training, each BatchNorm's running mean and variance is an exponential average (momentum 0.1) of
the statistics of the last few batches of *augmented crops* (both recipes scale frames by 0.5-2
before cropping), each computed with the weights of its own step; with a moving average of the weights
(``ema_decay``) those statistics are averaged once more, beside weights that never produced them.
Inference sees something else: whole frames at the weights' ``input_size``, through the final weights.
``recalibrate_batchnorm`` gives every BatchNorm the statistics of that: their average over the training
images, unaugmented, at ``input_size``, the rest of the network in inference mode (dropout off). As
``torch.optim.swa_utils.update_bn`` and fvcore's ``update_bn_stats`` do, each BatchNorm averages its
per-batch means and variances (PyTorch's ``momentum=None``); ``update_bn`` itself is not used because it
puts the whole network in training mode, dropout included.

It is no sure gain: it has both raised and lowered val mIoU (docs/training.md gives the measurements).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import nn


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics of ``model`` by their average over ``batches``.

    ``batches``: normalised images as the network takes them (N x 3 x H x W). The rest of the network
    runs in eval mode, without gradients; the model's train/eval mode and each BatchNorm's momentum
    are restored. Returns how many images were seen; with none, the statistics are left as they were.
    """
    norms = batch_norms(model)
    batches = iter(batches)
    first = next(batches, None)
    if first is None or not norms:
        return 0
    was_training, momenta = model.training, [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average of the batches' statistics
        norm.train()
    seen = 0
    try:
        with torch.no_grad():
            for images in itertools.chain([first], batches):
                model(images)
                seen += images.shape[0]
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return seen
