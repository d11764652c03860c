"""Segmentation networks in pure PyTorch: CGNet and ContextNet.

``build_model(name, num_classes, **variant)`` is the one way in; a named
variant of the papers (``variant="M3N21"``, ``variant="cn14-500"``) expands
to its keyword arguments, and explicit keywords override it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import SegNodeError
from . import cgnet as _cgnet
from . import contextnet as _contextnet
from .cgnet import CGNet
from .contextnet import ContextNet

__all__ = ["CGNet", "ContextNet", "MODELS", "UnknownModelError", "build_model", "count_macs", "count_parameters"]

# name -> (builder, named variants, default variant)
MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, dict[str, Any]], str]] = {
    "cgnet": (_cgnet.cgnet, _cgnet.VARIANTS, "M3N21"),
    "contextnet": (_contextnet.contextnet, _contextnet.VARIANTS, "cn14"),
}


class UnknownModelError(SegNodeError, ValueError):
    """A model name or named variant that does not exist."""


def build_model(name: str, num_classes: int, variant: str | None = None, **kwargs: Any) -> nn.Module:
    """Build ``name`` ("cgnet" or "contextnet") for ``num_classes`` classes.

    ``variant`` names one of the paper's variants; ``kwargs`` (CGNet: ``m``,
    ``n``, ``dropout``; ContextNet: ``context_scale``, ``width``, ``dropout``,
    ``aux_classifier``) override it.
    """
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    builder, variants, default = MODELS[name]
    variant = default if variant is None else variant
    if variant not in variants:
        raise UnknownModelError(f"unknown {name} variant {variant!r}; choose one of {sorted(variants)}")
    return builder(num_classes=num_classes, **{**variants[variant], **kwargs})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of convolutions and linear layers for one 3 x height x width image."""
    macs = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        macs += output.numel() * kernel

    def linear_hook(module: nn.Linear, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs
