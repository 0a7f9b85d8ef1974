"""The transformation network of fast mode (Johnson et al. 2016, with instance normalisation)."""

from __future__ import annotations

import torch
from torch import nn

from .options import WIDTHS

# Name of the network's output in the exported ONNX file.
OUTPUT_NAME = "stylized"


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


def _conv_norm_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(cin, cout, kernel, stride), nn.InstanceNorm2d(cout, affine=True), nn.ReLU()]


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, 3),
            _conv(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """RGB [0, 1] in, stylized RGB [0, 1] out, same size (height and width multiples of 4)."""

    def __init__(self, width: str = "default", residual_blocks: int = 5):
        super().__init__()
        c1, c2, c3 = WIDTHS[width]
        self.body = nn.Sequential(
            *_conv_norm_relu(3, c1, 9),
            *_conv_norm_relu(c1, c2, 3, 2),
            *_conv_norm_relu(c2, c3, 3, 2),
            *(Residual(c3) for _ in range(residual_blocks)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(c3, c2, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(c2, c1, 3),
            _conv(c1, 3, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))
