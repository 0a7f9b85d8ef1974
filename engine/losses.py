"""Content, style (Gram) and total-variation losses.

Content and style losses are relative squared errors (divided by the target's
energy), so one set of default weights works for every model and for both
input conventions (Caffe features are ~255x larger than torchvision ones).
"""

from __future__ import annotations

import torch


def gram(features: torch.Tensor) -> torch.Tensor:
    """Channel correlation matrix, normalised by the number of entries (size-independent)."""
    b, c, h, w = features.shape
    flat = features.reshape(b * c, h * w).float()
    return flat @ flat.t() / (c * h * w)


def relative_mse(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (value.float() - target).pow(2).sum() / (target.pow(2).sum() + 1e-8)


def content_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(relative_mse(features[name], target) for name, target in targets.items()) / len(targets)


def style_loss(
    features: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], layer_weights: dict[str, float]
) -> torch.Tensor:
    total = sum(layer_weights.values())
    return sum(layer_weights[name] * relative_mse(gram(features[name]), g) for name, g in grams.items()) / total


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: suppresses high-frequency noise."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()
