"""CGNet: A Light-weight Context Guided Network for Semantic Segmentation.

Wu, Tang, Zhang, Zhang (2018), arXiv:1811.08201; layer for layer as the
authors' released code (github.com/wutianyiRosun/CGNet), so that their
weights load and the parameter count matches (CGNet_M3N21: 494,258 with 11
classes, 496,306 with 19).

Table 1 of the paper (Cityscapes, 680x680 input; "Conv" is Conv-BN-PReLU,
r is the dilation of f_sur, M and N the CG blocks in stage 2 and 3)::

    stage 1   3x3 Conv (stride=2)      32   340x340
              3x3 Conv (stride=1)      32   340x340
              3x3 Conv (stride=1)      32   340x340
    stage 2   CG block (r=2) x M       64   170x170
    stage 3   CG block (r=4) x N      128    85x85
              1x1 Conv (stride=1)      19    85x85

Table 6 (Cityscapes val): M3N9 0.34 M 56.5%, M3N12 0.38 M 58.1%, M6N12 0.39 M
57.9%, M3N15 0.41 M 59.7%, M6N15 0.41 M 58.4%, M3N18 0.45 M 61.1%,
M3N21 0.49 M 63.5%.

The first block of each of stage 2 and 3 down-samples; its input is the
concatenation of the first and last outputs of the previous stage (feature
reuse) and of the input image down-sampled to that resolution (input
injection). Scores are bilinearly up-sampled to the input size.
"""

from __future__ import annotations

import torch
from torch import nn

from .upsampling import upsample_scores

# The authors' code uses eps=1e-3 in every BatchNorm.
BN_EPS = 1e-3


class ConvBNPReLU(nn.Sequential):
    """The paper's "Conv": k x k convolution, BatchNorm, PReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS),
            nn.PReLU(out_channels),
        )


class BNPReLU(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(nn.BatchNorm2d(channels, eps=BN_EPS), nn.PReLU(channels))


class ChannelWiseConv(nn.Conv2d):
    """3x3 channel-wise (depth-wise) convolution; f_loc with dilation 1, f_sur dilated."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False)


class GlobalContext(nn.Module):
    """f_glo: global average pool, two-layer MLP, sigmoid, channel-wise re-weighting.

    The pool is a mean over height and width, not ``nn.AdaptiveAvgPool2d(1)``: the same numbers, but
    TensorRT turns it into a reduce layer, where the adaptive pool became a pooling layer whose window
    is the whole feature map (131,072 at 1024x2048), over TensorRT's pooling window limit. The pool has
    no parameters, so the state_dict keys (and the shipped weights) are unchanged.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mlp(self.pool(x))
        return x * weights.view(weights.shape[0], weights.shape[1], 1, 1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The global average pool, (N, C)."""
        return x.mean((2, 3), keepdim=True).flatten(1)


class ContextGuidedBlock(nn.Module):
    """CG block with global residual learning (Fig. 3 d, Fig. 4 b).

    A 1x1 Conv halves the channels, f_loc and f_sur see the same features,
    f_joi concatenates them (BN, PReLU), f_glo re-weights the joint feature,
    and the block input is added back.
    """

    def __init__(self, channels: int, dilation: int, reduction: int) -> None:
        super().__init__()
        half = channels // 2
        self.reduce = ConvBNPReLU(channels, half, 1)
        self.f_loc = ChannelWiseConv(half)
        self.f_sur = ChannelWiseConv(half, dilation)
        self.f_joi = BNPReLU(channels)
        self.f_glo = GlobalContext(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.reduce(x)
        joint = self.f_joi(torch.cat([self.f_loc(features), self.f_sur(features)], 1))
        return x + self.f_glo(joint)


class DownsamplingContextGuidedBlock(nn.Module):
    """First CG block of a stage: a stride-2 3x3 Conv to the stage's width, no residual.

    f_joi is followed by a 1x1 convolution back to the stage's width, as in
    the authors' code.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int, reduction: int) -> None:
        super().__init__()
        self.downsample = ConvBNPReLU(in_channels, out_channels, 3, stride=2)
        self.f_loc = ChannelWiseConv(out_channels)
        self.f_sur = ChannelWiseConv(out_channels, dilation)
        self.f_joi = BNPReLU(2 * out_channels)
        self.project = nn.Conv2d(2 * out_channels, out_channels, 1, bias=False)
        self.f_glo = GlobalContext(out_channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.downsample(x)
        joint = self.f_joi(torch.cat([self.f_loc(features), self.f_sur(features)], 1))
        return self.f_glo(self.project(joint))


class InputInjection(nn.Sequential):
    """The input image down-sampled by 2**times with 3x3 stride-2 average pools."""

    def __init__(self, times: int) -> None:
        super().__init__(*(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)))


class ContextGuidedStage(nn.Module):
    """One down-sampling CG block followed by ``blocks - 1`` CG blocks.

    Returns the concatenation of the first and the last block outputs.
    """

    def __init__(self, in_channels: int, channels: int, blocks: int, dilation: int, reduction: int) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"a CGNet stage needs at least one CG block, got {blocks}")
        self.down = DownsamplingContextGuidedBlock(in_channels, channels, dilation, reduction)
        self.blocks = nn.Sequential(*(ContextGuidedBlock(channels, dilation, reduction) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.down(x)
        return first, self.blocks(first)


class CGNet(nn.Module):
    """Context Guided Network with M CG blocks in stage 2 and N in stage 3."""

    name = "cgnet"

    def __init__(self, num_classes: int = 19, m: int = 3, n: int = 21, dropout: float = 0.0) -> None:
        super().__init__()
        self.m, self.n = m, n
        self.stage1 = nn.Sequential(ConvBNPReLU(3, 32, 3, stride=2), ConvBNPReLU(32, 32, 3), ConvBNPReLU(32, 32, 3))
        self.inject_half = InputInjection(1)
        self.inject_quarter = InputInjection(2)
        self.stage1_out = BNPReLU(32 + 3)
        self.stage2 = ContextGuidedStage(32 + 3, 64, m, dilation=2, reduction=8)
        self.stage2_out = BNPReLU(64 + 64 + 3)
        self.stage3 = ContextGuidedStage(64 + 64 + 3, 128, n, dilation=4, reduction=16)
        self.stage3_out = BNPReLU(128 + 128)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(256, num_classes, 1, bias=False)
        self._init_weights()

    @property
    def variant(self) -> dict[str, int]:
        return {"m": self.m, "n": self.n}

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.stage1(x)
        half = self.stage1_out(torch.cat([half, self.inject_half(x)], 1))
        first, last = self.stage2(half)
        quarter = self.stage2_out(torch.cat([last, first, self.inject_quarter(x)], 1))
        first, last = self.stage3(quarter)
        eighth = self.stage3_out(torch.cat([first, last], 1))
        scores = self.classifier(self.dropout(eighth))
        return upsample_scores(scores, x.shape[2:])


# Table 6's variants as (m, n) keyword arguments.
VARIANTS: dict[str, dict[str, int]] = {
    f"M{m}N{n}": {"m": m, "n": n} for m, n in ((3, 9), (3, 12), (6, 12), (3, 15), (6, 15), (3, 18), (3, 21))
}


def cgnet(num_classes: int = 19, m: int = 3, n: int = 21, dropout: float = 0.0) -> CGNet:
    """CGNet_M{m}N{n}; the paper's model is M=3, N=21."""
    return CGNet(num_classes=num_classes, m=m, n=n, dropout=dropout)
