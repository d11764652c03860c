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

__all__ = ["CGNet", "ContextNet", "MODELS", "MODEL_ARGUMENTS", "ModelArgumentError", "UnknownModelError", "build_model",
           "check_model_arguments", "count_macs", "count_parameters"]

# name -> (builder, named variants, default variant)
MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, dict[str, Any]], str]] = {
    "cgnet": (_cgnet.cgnet, _cgnet.VARIANTS, "M3N21"),
    "contextnet": (_contextnet.contextnet, _contextnet.VARIANTS, "cn14"),
}


# The builders' keyword arguments: (type, lowest, highest). The bounds are wide around the papers' variants
# (CGNet M3N21, ContextNet cn12-cn18, width 0.41-1) but refuse what would build for minutes (``n: 100000``).
ArgumentRange = tuple[type, float, float]
MODEL_ARGUMENTS: dict[str, dict[str, ArgumentRange]] = {
    "cgnet": {"m": (int, 1, 16), "n": (int, 1, 64), "dropout": (float, 0.0, 0.9)},
    "contextnet": {
        "context_scale": (int, 1, 16),
        "width": (float, 0.1, 4.0),
        "dropout": (float, 0.0, 0.9),
        "aux_classifier": (bool, 0, 1),
    },
}
MAX_CLASSES = 256  # labels are uint8 images


class UnknownModelError(SegNodeError, ValueError):
    """A model name or named variant that does not exist."""


class ModelArgumentError(SegNodeError, ValueError):
    """A builder argument that the model does not take, of the wrong type, or out of its range."""


def _argument_fits(value: Any, kind: type, low: float, high: float) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind is int and not float(value).is_integer():
        return False
    return low <= value <= high


def _describe_range(kind: type, low: float, high: float) -> str:
    if kind is bool:
        return "true or false"
    return f"an integer from {low} to {high}" if kind is int else f"a number from {low} to {high}"


def check_model_arguments(name: str, num_classes: object, arguments: dict[str, Any]) -> None:
    """Raise ModelArgumentError naming the first argument of ``name``'s builder that is unknown or out of range."""
    allowed = MODEL_ARGUMENTS[name]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise ModelArgumentError(f"{name} needs 1 to {MAX_CLASSES} classes, got {num_classes!r}")
    for key, value in arguments.items():
        if key not in allowed:
            raise ModelArgumentError(f"{name} takes no argument {key!r}; it takes {', '.join(allowed)}")
        kind, low, high = allowed[key]
        if not _argument_fits(value, kind, low, high):
            raise ModelArgumentError(f"{name} argument {key}={value!r} is not {_describe_range(kind, low, high)}")


def build_model(name: str, num_classes: int, variant: str | None = None, **kwargs: Any) -> nn.Module:
    """Build ``name`` ("cgnet" or "contextnet") for ``num_classes`` classes.

    ``variant`` names one of the paper's variants; ``kwargs`` (CGNet: ``m``,
    ``n``, ``dropout``; ContextNet: ``context_scale``, ``width``, ``dropout``,
    ``aux_classifier``) override it. ModelArgumentError names an argument that is unknown or out of range.
    """
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    builder, variants, default = MODELS[name]
    variant = default if variant is None else variant
    if variant not in variants:
        raise UnknownModelError(f"unknown {name} variant {variant!r}; choose one of {sorted(variants)}")
    arguments = {**variants[variant], **kwargs}
    check_model_arguments(name, num_classes, arguments)
    kinds = MODEL_ARGUMENTS[name]
    return builder(num_classes=num_classes, **{k: kinds[k][0](v) for k, v in arguments.items()})


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
