"""Faster CPU training for CGNet's memory-bound layers, swapped into the model by the trainer.

Profiled on this project's 2-core CPU (one thread, batch 8, 360x360, ``torch.profiler``), a CGNet
training step spent most of its time not in its convolutions' arithmetic but in passes over memory:

- **BatchNorm followed by PReLU** (54 pairs): ATen runs them as separate kernels forward and backward,
  and ATen's PReLU backward is not vectorised (29% of the step on its own). ``batch_norm_prelu`` runs
  each pair as one kernel that ``torch.compile`` (Inductor) generates, forward and backward: 2.3-3.2x
  as fast as ATen's pair on CGNet's feature maps, forward plus backward.
- **The dilated channel-wise convolutions** (f_sur): oneDNN's backward for them is about 7x slower
  than for the undilated ones (f_loc). ``dilated_channel_wise_conv2d`` computes the input's gradient as a
  forward convolution with the flipped kernel (what the gradient of a stride-1 convolution is; oneDNN's
  forward is fast when dilated) and the weight's nine taps in one compiled reduction: the backward of
  a 64-channel 45x45 map at dilation 4 went from 8.5 to 2.9 ms.
- **The dense 3x3 convolutions** (stage 1 and the down-sampling Convs) on channels-last maps: oneDNN's
  weight gradient for them was 2-3x slower than on the same maps in NCHW (32 channels at 180x180:
  385 against 175 ms on one thread of an AMD EPYC), while their input gradient is faster channels-last.
  ``dense_conv2d`` keeps ATen's forward and input gradient and takes the weight's gradient through NCHW
  copies for the layers where that is faster: which layers, it measures at each shape's first backward
  (``WEIGHT_GRADIENT_FROM_NCHW``), as it differs between processors (one layer of CGNet was faster
  channels-last on that machine). Both ways gave bit-identical gradients there, so a resumed run takes
  the same steps whichever way its process measured faster.
- **f_glo's global average pool** (one per CG block): ``Tensor.mean``'s backward writes the gradient
  out as a full-size tensor, divided element by element, that autograd then adds to the re-weighting's
  gradient. ``spatial_mean`` takes the mean as a sum divided by the count instead, whose backward is
  a broadcast view: f_glo plus the residual addition, forward and backward, went from 13.2 to 6.5 ms
  on a 128-channel 45x45 map.

They only change how the same numbers are computed: ``tests/test_models.py`` checks outputs, gradients
and BatchNorm's running statistics against ATen's. ``use_cpu_training_kernels`` (the trainer calls it for
CPU training) swaps CGNet's plain modules (``models.cgnet``) for this file's subclasses, which hold the
same parameters under the same names, so checkpoints and weights files are unchanged; they run the kernels
in training mode, on the CPU, with gradients enabled, and are the plain modules otherwise (inference,
ONNX and TensorRT export, CUDA training).
Compiling needs a C++ compiler and takes seconds at the first step; if it fails, a warning says why and
the layers run uncompiled, with the same results.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.cgnet import BNPReLU, ChannelWiseConv, ConvBNPReLU, GlobalContext


class _CompiledKernel:
    """``function`` compiled by ``torch.compile`` at its first call, for any input shape.

    If compiling fails (no C++ compiler, ...), every kernel runs uncompiled from then on, after one
    warning. Inside a network that is itself being compiled, the plain function is traced into it.
    """

    failed = False

    def __init__(self, function: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]) -> None:
        self.function = function
        self.compiled: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]] | None = None

    def __call__(self, *args: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if _CompiledKernel.failed or torch.compiler.is_compiling():
            return self.function(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.function, dynamic=True)
        try:
            return self.compiled(*args)
        except Exception as error:
            from torch._dynamo.exc import TorchDynamoException  # here, not at import: dynamo is slow to import

            if not isinstance(error, TorchDynamoException):
                raise
            _CompiledKernel.failed = True
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warnings.warn(
                f"compiling the CPU training kernels failed ({reason[:300]}); training goes on with the "
                "uncompiled layers (same results, slower). Inductor needs a C++ compiler (g++).",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.function(*args)


def _batch_norm_prelu(
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float,
    eps: float,
    prelu_weight: torch.Tensor,
) -> torch.Tensor:
    normalized = F.batch_norm(x, running_mean, running_var, norm_weight, norm_bias, True, momentum, eps)
    return F.prelu(normalized, prelu_weight)


def _channel_wise_weight_grad(grad: torch.Tensor, x: torch.Tensor, dilation: int) -> torch.Tensor:
    """The 3x3 channel-wise kernel's gradient, (C, 9): per tap, the gradient times the shifted input."""
    height, width = grad.shape[2], grad.shape[3]
    padded = F.pad(x, (dilation, dilation, dilation, dilation))
    taps = [
        (grad * padded[:, :, row * dilation : row * dilation + height, col * dilation : col * dilation + width]).sum(
            (0, 2, 3)
        )
        for row in range(3)
        for col in range(3)
    ]
    return torch.stack(taps, 1)


_fused_batch_norm_prelu = _CompiledKernel(_batch_norm_prelu)
_fused_channel_wise_weight_grad = _CompiledKernel(_channel_wise_weight_grad)


class _DilatedChannelWiseConv(torch.autograd.Function):
    """3x3 channel-wise convolution, stride 1, padding = dilation, no bias: oneDNN forward, own backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor, dilation: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, None, 1, dilation, dilation, weight.shape[0])

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        dilation = ctx.dilation
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            # a stride-1 convolution's input gradient is the convolution of its output gradient with the
            # kernel flipped in both directions
            grad_x = F.conv2d(grad, weight.flip(2, 3), None, 1, dilation, dilation, weight.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weight = _fused_channel_wise_weight_grad(grad, x, dilation).view(weight.shape)
        return grad_x, grad_weight, None


# per (input shape, weight shape, stride, padding) of a channels-last convolution: whether its weight's
# gradient was faster from NCHW copies when both ways were timed, at the shape's first backward
WEIGHT_GRADIENT_FROM_NCHW: dict[tuple, bool] = {}


def _conv_gradient(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, which: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, [*which, False]
    )
    return grad_x, grad_weight


def _dense_conv_weight_gradient(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    def from_nchw() -> torch.Tensor:
        nchw = _conv_gradient(grad.contiguous(), x.contiguous(), weight.contiguous(), stride, padding, (False, True))
        return nchw[1].contiguous(memory_format=torch.channels_last)

    def as_is() -> torch.Tensor:
        return _conv_gradient(grad, x, weight, stride, padding, (False, True))[1]

    if x.is_contiguous():  # already NCHW
        return as_is()
    key = (tuple(x.shape), tuple(weight.shape), stride, padding)
    if key not in WEIGHT_GRADIENT_FROM_NCHW:
        start = time.perf_counter()
        kept_layout = as_is()
        middle = time.perf_counter()
        copied = from_nchw()
        WEIGHT_GRADIENT_FROM_NCHW[key] = time.perf_counter() - middle < middle - start
        # the way chosen from the first step on, so that a process's steps all take the same way
        return copied if WEIGHT_GRADIENT_FROM_NCHW[key] else kept_layout
    return from_nchw() if WEIGHT_GRADIENT_FROM_NCHW[key] else as_is()


class _DenseConv(torch.autograd.Function):
    """k x k convolution, groups 1, dilation 1, no bias: ATen's forward and input gradient, own weight gradient."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_gradient(grad, x, weight, ctx.stride, ctx.padding, (True, False))[0]
        if ctx.needs_input_grad[1]:
            grad_weight = _dense_conv_weight_gradient(grad, x, weight, ctx.stride, ctx.padding)
        return grad_x, grad_weight, None, None


def batch_norm_prelu(x: torch.Tensor, norm: nn.BatchNorm2d, activation: nn.PReLU) -> torch.Tensor:
    """``activation(norm(x))``; as one compiled kernel when ``norm`` keeps a running mean."""
    if not (norm.training and norm.track_running_stats and norm.momentum is not None):
        return activation(norm(x))
    norm.num_batches_tracked.add_(1)  # as nn.BatchNorm2d counts batches in training
    return _fused_batch_norm_prelu(
        x, norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.momentum, norm.eps, activation.weight
    )


def dense_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Convolution of ``x`` (groups 1, dilation 1, no bias) whose weight gradient comes from NCHW copies where
    that was measured faster."""
    return _DenseConv.apply(x, weight, stride, padding)


def dilated_channel_wise_conv2d(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 channel-wise convolution of ``x`` (stride 1, padding = dilation, no bias) with this file's backward."""
    return _DilatedChannelWiseConv.apply(x, weight, dilation)


def runs_kernels(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether a swapped-in module trains through the kernels now: in training mode, on the CPU, with gradients."""
    return module.training and x.is_cpu and torch.is_grad_enabled()


class KernelConvBNPReLU(ConvBNPReLU):
    """The paper's Conv with the dense convolution's weight gradient and the fused BatchNorm-PReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_kernels(self, x):
            return super().forward(x)
        conv, norm, activation = self
        # a 1x1 convolution's weight gradient is one matrix product, fast in either layout
        features = conv(x) if conv.kernel_size == (1, 1) else dense_conv2d(x, conv.weight, conv.stride[0],
                                                                            conv.padding[0])
        return batch_norm_prelu(features, norm, activation)


class KernelBNPReLU(BNPReLU):
    """BatchNorm and PReLU as one compiled kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_kernels(self, x):
            return super().forward(x)
        norm, activation = self
        return batch_norm_prelu(x, norm, activation)


class KernelChannelWiseConv(ChannelWiseConv):
    """f_sur's dilated channel-wise convolution with this file's backward (undilated, oneDNN's is fast already)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation[0] > 1 and runs_kernels(self, x):
            return dilated_channel_wise_conv2d(x, self.weight, self.dilation[0])
        return super().forward(x)


class KernelGlobalContext(GlobalContext):
    """f_glo whose pool is a sum divided by the count: its gradient is a broadcast view, not a full-size tensor.

    Only for float32 training: a float16 sum over a large map can overflow (the kernels run on the CPU only).
    """

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_kernels(self, x):
            return super().pool(x)
        return x.sum((2, 3)) / (x.shape[2] * x.shape[3])


# CGNet's plain module -> its subclass that trains through the kernels
KERNEL_MODULES: dict[type[nn.Module], type[nn.Module]] = {
    ConvBNPReLU: KernelConvBNPReLU,
    BNPReLU: KernelBNPReLU,
    ChannelWiseConv: KernelChannelWiseConv,
    GlobalContext: KernelGlobalContext,
}


def use_cpu_training_kernels(model: nn.Module, enabled: bool = True) -> int:
    """Swap the modules of ``model`` that have CPU training kernels for their kernel subclasses (or, not
    ``enabled``, back to the plain modules); returns how many were swapped. ContextNet has none.

    Each module keeps its identity and only changes class: its parameters, buffers and their state_dict
    keys stay as they are, so the optimizer, checkpoints and weights files see the same model.
    """
    swaps = KERNEL_MODULES if enabled else {kernel: plain for plain, kernel in KERNEL_MODULES.items()}
    swapped = 0
    for module in model.modules():
        replacement = swaps.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            swapped += 1
    return swapped
