"""PReLU whose backward pass is faster on the CPU.

ATen computes PReLU's gradients on the CPU in one loop with two outputs (the input's gradient and a
full-size tensor of weight-gradient terms, summed afterwards), which it does not vectorise. In a CGNet
training step on this project's 2-core CPU (batch 8, 360x360, ``torch.profiler``) that backward took 29%
of the step while PReLU's forward took 2.6%. ``_PReLUFunction`` computes the same gradients from
element-wise ops that are vectorised, in about half to two thirds of ATen's time;
``tests/test_models.py`` checks that the gradients are ATen's.

Only training on the CPU takes this path. On CUDA ATen's fused kernel is faster than four separate ones,
and in eval mode (inference, ONNX and TensorRT export) the module is ``nn.PReLU`` as it was: the same
parameter, state_dict key and forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _PReLUFunction(torch.autograd.Function):
    """prelu(x) = x for x > 0, weight * x otherwise; weight has one entry per channel (dimension 1)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        # threshold_backward keeps grad where x > 0 and zeroes it elsewhere: the positive part's gradient.
        grad_positive = torch.ops.aten.threshold_backward(grad, x, 0.0)
        grad_negative = grad - grad_positive
        per_channel = weight.view((1, -1) + (1,) * (x.dim() - 2))
        grad_x = torch.addcmul(grad_positive, grad_negative, per_channel)
        grad_weight = (grad_negative * x).sum([d for d in range(x.dim()) if d != 1])
        return grad_x, grad_weight.view_as(weight)


class PReLU(nn.PReLU):
    """``nn.PReLU`` with one weight per channel, trained on the CPU through ``_PReLUFunction``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.is_cpu and torch.is_grad_enabled() and self.num_parameters == x.shape[1]:
            return _PReLUFunction.apply(x, self.weight)
        return F.prelu(x, self.weight)
