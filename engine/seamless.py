"""Seamless (tiling) textures: the image is optimised as a torus, and the seam is measured.

With `StyleOptions.seamless` a run wraps around at every step where an image
edge could show:

- the feature network pads its convolutions circularly (`FeatureNet.set_padding`,
  switched on by `engine.model.prepare_network`), for the optimised image and
  for the content and style targets alike (targets then come from torch, and
  cached style Grams are keyed by the padding);
- the total-variation loss compares the last column/row with the first
  (`engine.losses.tv_loss(wrap=True)`);
- coarse-to-fine resizing is periodic (`periodic_resize`, `periodic_upsample`:
  resize a 3x3 tiled copy and keep the centre), and every scale is optimised at
  sides divisible by the network's stride (`torus_sizes`), where VGG's
  2x2 poolings keep the torus exact;
- the tiler never tiles a seamless run (a tile is not a torus): a texture must
  fit in memory whole.

`seam_ratio` is the measure: the mean absolute difference across the wrap
edge divided by the same statistic between neighbouring columns/rows inside
the image; about 1 or below means the seam is no more visible than any other
pixel step (benchmarks/bench_seamless.py, docs/material-textures.md).
"""

from __future__ import annotations

import numpy as np
import torch

from .images import resize


def periodic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`images.resize` of an image that repeats: the resampling filter wraps across the edges."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    tiled = np.tile(image, (3, 3, 1))
    return np.ascontiguousarray(resize(tiled, 3 * height, 3 * width)[height : 2 * height, width : 2 * width])


def periodic_upsample(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of a 1xCxhxw torus image to height x width (the 3x3 tiled copy's centre)."""
    tiled = image.repeat(1, 1, 3, 3)
    out = torch.nn.functional.interpolate(tiled, size=(3 * height, 3 * width), mode="bicubic", align_corners=False)
    return out[..., height : 2 * height, width : 2 * width].clamp(0, 1)


def torus_sizes(sizes: list[tuple[int, int]], stride: int) -> list[tuple[int, int]]:
    """Each scale's size rounded to the nearest multiple of `stride` (at least one stride), so every
    pooling halves an even side and the network stays exact on the torus."""

    def up(n: int) -> int:
        return max(stride, round(n / stride) * stride)

    return [(up(h), up(w)) for h, w in sizes]


def seam_ratio(image: np.ndarray) -> float:
    """Mean |difference| across the wrap edges (last vs first column and row) over the mean |difference|
    between neighbouring columns and rows inside the image; RGB only."""
    rgb = np.asarray(image, dtype=np.float64)[..., :3]
    across = np.abs(rgb[:, -1] - rgb[:, 0]).mean() + np.abs(rgb[-1] - rgb[0]).mean()
    inside = np.abs(np.diff(rgb, axis=1)).mean() + np.abs(np.diff(rgb, axis=0)).mean()
    return float(across / inside) if inside > 0 else (0.0 if across == 0 else float("inf"))
