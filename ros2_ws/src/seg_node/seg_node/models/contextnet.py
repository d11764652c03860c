"""ContextNet: Exploring Context and Detail for Semantic Segmentation in Real-time.

Poudel, Bonde, Liwicki, Zach (BMVC 2018), arXiv:1805.04554.

Two branches: a deep branch on the image down-sampled by ``context_scale``
(4 for cn14) captures global context, a shallow branch at full resolution
keeps spatial detail, and the feature fusion unit adds them at 1/8 of the
input resolution. ReLU6 is the non-linearity throughout (Sec. 3.1).

Table 2, the deep branch for a 1024x2048 image (cn14; t expansion factor,
c output channels, n repeats, s stride of the first repeat)::

    input          operator    t    c    n   s
    256x512x3      Conv2d      -   32    1   2
    128x256x32     bottleneck  1   32    1   1
    128x256x32     bottleneck  6   32    1   1
    128x256x32     bottleneck  6   48    3   2
    64x128x48      bottleneck  6   64    3   2
    32x64x64       bottleneck  6   96    2   1
    32x64x96       bottleneck  6  128    2   1
    32x64x128      Conv2d      -  128    1   1

Table 3, the feature fusion unit::

    shallow branch (1)        deep branch (4)
    -                         Upsample x4
    -                         DWConv (dilation 4) 3/1, f
    Conv2d 1/1, -             Conv2d 1/1, -
                  add, f

The shallow branch (Sec. 2.2) is a standard 3x3 convolution and three
depth-wise separable 3x3 convolutions with 32, 64, 128, 128 channels and
stride 2, 2, 2, 1, with no non-linearity between depth-wise and point-wise.

Table 2 leaves the kernel of the deep branch's last Conv2d open. The paper's
count of 0.85 M parameters for cn14 settles it: with 19 classes this module
has 856,851 parameters with a 1x1 last convolution and 987,923 with a 3x3,
so it is a 1x1.

Table 4 (Cityscapes val): cn18 60.1%, cn14 65.9%, cn12 68.7%, all 0.85 M;
cn14-500 62.1% (490,459 parameters), cn14-160 57.7% (159,387). The paper does
not say how those two were narrowed; a uniform width multiplier of 0.745
(491,038 parameters) and 0.41 (158,623) comes closest, see ``VARIANTS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .upsampling import upsample_scores


class ReLU6(nn.Module):
    """ReLU6 through ``F.relu6``: TensorRT converters handle it as a clamp."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


class ConvBNReLU6(nn.Sequential):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        padding = dilation * (kernel_size // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(ReLU6())
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 bottleneck residual block (the paper's Table 1).

    1x1 expansion by t, 3x3 depth-wise with stride s, linear 1x1 projection;
    a residual connection when input and output have the same shape.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = ConvBNReLU6(in_channels, hidden, 1)
        self.depthwise = ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNReLU6(hidden, out_channels, 1, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class DepthwiseSeparableConv(nn.Sequential):
    """Depth-wise 3x3 then point-wise 1x1, no non-linearity in between (Sec. 2.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            ConvBNReLU6(in_channels, in_channels, 3, stride, groups=in_channels, activation=False),
            ConvBNReLU6(in_channels, out_channels, 1),
        )


# (expansion t, output channels c, repeats n, stride s) of Table 2.
DEEP_BRANCH_BOTTLENECKS = ((1, 32, 1, 1), (6, 32, 1, 1), (6, 48, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1), (6, 128, 2, 1))


# The paper's named variants as (context_scale, width) keyword arguments.
VARIANTS: dict[str, dict[str, float]] = {
    "cn12": {"context_scale": 2, "width": 1.0},
    "cn14": {"context_scale": 4, "width": 1.0},
    "cn18": {"context_scale": 8, "width": 1.0},
    "cn14-500": {"context_scale": 4, "width": 0.745},
    "cn14-160": {"context_scale": 4, "width": 0.41},
}


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


class DeepBranch(nn.Module):
    """Context branch on the down-sampled image: Conv2d, 12 bottlenecks, 1x1 Conv2d (Table 2)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        channels = _scaled(32, width)
        layers: list[nn.Module] = [ConvBNReLU6(3, channels, 3, stride=2)]
        for expansion, out, repeats, stride in DEEP_BRANCH_BOTTLENECKS:
            out = _scaled(out, width)
            for i in range(repeats):
                layers.append(Bottleneck(channels, out, expansion, stride if i == 0 else 1))
                channels = out
        self.out_channels = _scaled(128, width)
        layers.append(ConvBNReLU6(channels, self.out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ShallowBranch(nn.Sequential):
    """Detail branch at full resolution: 32, 64, 128, 128 channels, strides 2, 2, 2, 1."""

    def __init__(self, width: float = 1.0) -> None:
        c32, c64, c128 = _scaled(32, width), _scaled(64, width), _scaled(128, width)
        super().__init__(
            ConvBNReLU6(3, c32, 3, stride=2),
            DepthwiseSeparableConv(c32, c64, stride=2),
            DepthwiseSeparableConv(c64, c128, stride=2),
            DepthwiseSeparableConv(c128, c128, stride=1),
        )
        self.out_channels = c128


class FeatureFusionUnit(nn.Module):
    """Table 3: up-sample the deep features to the shallow ones, dilated DWConv, 1x1 each, add."""

    def __init__(self, deep_channels: int, shallow_channels: int, out_channels: int, dilation: int = 4) -> None:
        super().__init__()
        self.deep_dwconv = ConvBNReLU6(deep_channels, deep_channels, 3, dilation=dilation, groups=deep_channels)
        self.deep_project = ConvBNReLU6(deep_channels, out_channels, 1, activation=False)
        self.shallow_project = ConvBNReLU6(shallow_channels, out_channels, 1, activation=False)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        # size= rather than a fixed x4: odd input sizes round differently in the two branches.
        deep = F.interpolate(deep, size=shallow.shape[2:], mode="bilinear", align_corners=False)
        deep = self.deep_project(self.deep_dwconv(deep))
        return F.relu6(deep + self.shallow_project(shallow))


class ContextNet(nn.Module):
    """ContextNet cn1{context_scale}, optionally narrowed by ``width``.

    With ``aux_classifier`` the model in training mode returns
    ``(logits, deep_branch_logits)`` for the paper's auxiliary loss; in
    evaluation mode it always returns the logits alone.
    """

    name = "contextnet"

    def __init__(
        self,
        num_classes: int = 19,
        context_scale: int = 4,
        width: float = 1.0,
        dropout: float = 0.1,
        aux_classifier: bool = False,
    ) -> None:
        super().__init__()
        if context_scale not in (2, 4, 8):
            raise ValueError(f"context_scale must be 2, 4 or 8 (cn12, cn14, cn18), got {context_scale}")
        self.context_scale = context_scale
        self.width = width
        self.deep_branch = DeepBranch(width)
        self.shallow_branch = ShallowBranch(width)
        fused = self.shallow_branch.out_channels
        self.fusion = FeatureFusionUnit(self.deep_branch.out_channels, fused, fused)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(fused, num_classes, 1)
        self.aux_classifier = nn.Conv2d(self.deep_branch.out_channels, num_classes, 1) if aux_classifier else None

    @property
    def variant(self) -> dict[str, float]:
        return {"context_scale": self.context_scale, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[2:]
        small = F.interpolate(
            x, size=(height // self.context_scale, width // self.context_scale), mode="bilinear", align_corners=False
        )
        deep = self.deep_branch(small)
        fused = self.fusion(deep, self.shallow_branch(x))
        logits = upsample_scores(self.classifier(self.dropout(fused)), (height, width))
        if self.aux_classifier is not None and self.training:
            return logits, upsample_scores(self.aux_classifier(deep), (height, width))
        return logits


def contextnet(
    num_classes: int = 19,
    context_scale: int = 4,
    width: float = 1.0,
    dropout: float = 0.1,
    aux_classifier: bool = False,
) -> ContextNet:
    """ContextNet; cn14 is ``context_scale=4, width=1`` (see ``VARIANTS``)."""
    return ContextNet(num_classes, context_scale, width, dropout, aux_classifier)
