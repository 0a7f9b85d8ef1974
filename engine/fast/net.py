"""The transformation network of fast mode (Johnson et al. 2016, with instance normalisation).

Two changes make it learn in the few hundred steps a CPU affords (docs/onnx-and-fast-mode.md, "Why it
striped"):

- it starts as the identity with the style's colours: the output is `sigmoid(logit(colour(x)) + body(x))`,
  where `colour` is a learnable 1x1 convolution set to the linear map that gives the training frames the
  style's colour mean and covariance (`colour_transfer`), and the body's last convolution starts at zero.  A
  network started from random weights spends its first hundreds of steps relearning the content through the
  sigmoid (washed-out colours) and meets the style loss with the cheapest texture there is, a grating at one
  frequency (the stripes);
- nearest-neighbour upsampling then a convolution, never a transposed convolution (no checkerboard,
  Odena et al. 2016); reflection padding throughout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .options import WIDTHS

# Name of the network's output in the exported ONNX file.
OUTPUT_NAME = "stylized"
# The identity path keeps colours this far inside (0, 1), where the logit is finite.
EDGE = 1e-3


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
    """RGB [0, 1] in, stylized RGB [0, 1] out, same size (height and width multiples of 4).

    Untrained, it returns its input (through `colour`, the identity until `set_colour`).
    """

    def __init__(self, width: str = "default", residual_blocks: int = 5):
        super().__init__()
        c1, c2, c3 = WIDTHS[width]
        self.colour = nn.Conv2d(3, 3, 1)
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
        last = self.body[-1][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.set_colour(np.eye(3), np.zeros(3))

    def set_colour(self, matrix: np.ndarray, offset: np.ndarray) -> None:
        """Start the colour path at `rgb @ matrix.T + offset`."""
        with torch.no_grad():
            self.colour.weight.copy_(torch.as_tensor(np.asarray(matrix), dtype=torch.float32)[:, :, None, None])
            self.colour.bias.copy_(torch.as_tensor(np.asarray(offset), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.logit(self.colour(x).clamp(EDGE, 1 - EDGE)) + self.body(x))


def colour_transfer(content: np.ndarray, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) of the linear map giving `content` pixels (Nx3) the mean and covariance of `style`'s.

    The symmetric solution, Cs^1/2 Cc^-1/2 (the one that moves colours least; Gatys et al. 2017 use it for
    colour preservation, the other way round).
    """
    content = np.asarray(content, np.float64).reshape(-1, 3)
    style = np.asarray(style, np.float64)[..., :3].reshape(-1, 3)
    matrix = _sqrtm(np.cov(style.T)) @ _sqrtm(np.cov(content.T), inverse=True)
    return matrix, style.mean(axis=0) - matrix @ content.mean(axis=0)


def _sqrtm(covariance: np.ndarray, inverse: bool = False) -> np.ndarray:
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 1e-5, None)  # a flat image has no variance in some direction
    return (vectors * values ** (-0.5 if inverse else 0.5)) @ vectors.T
