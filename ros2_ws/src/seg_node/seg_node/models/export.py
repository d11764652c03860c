"""ONNX export of the segmentation networks.

Pinned to the TorchScript-based exporter (``dynamo=False``) at opset 17: it
writes one self-contained file for both networks and needs no ``onnxscript``;
the default dynamo exporter of torch 2.13 writes a side ``.onnx.data`` file and
leaves CGNet at opset 18. ``torch.onnx.export`` has the ``dynamo`` argument
from torch 2.5 on; older torch (2.4, as on some JetPack 6 l4t-pytorch images)
has only the TorchScript exporter and rejects the argument, so
``legacy_exporter_options`` passes it only where it exists.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def legacy_exporter_options() -> dict[str, Any]:
    """``{"dynamo": False}`` where ``torch.onnx.export`` takes it (torch >= 2.5), else nothing."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(model: nn.Module, path: str | Path, height: int, width: int, dynamic_size: bool = False) -> Path:
    """Write ``model`` (in eval mode) as ONNX for a 1 x 3 x height x width float input.

    With ``dynamic_size`` the height and width axes are symbolic, so one file
    serves every input size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    dynamic_axes = (
        {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAME: {2: "height", 3: "width"}} if dynamic_size else None
    )
    try:
        with warnings.catch_warnings():
            # The legacy exporter announces its deprecation on every call.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, height, width),),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET,
                dynamic_axes=dynamic_axes,
                **legacy_exporter_options(),
            )
    finally:
        model.train(was_training)
    return path
