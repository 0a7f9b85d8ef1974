"""Content, style (Gram) and total-variation losses, for one image or a batch.

Content and style losses are relative squared errors (divided by the target's
energy), so one set of default weights works for every model and for both
input conventions (Caffe features are ~255x larger than torchvision ones).
The same style loss serves the optimisation (a batch of one image) and
fast-mode training (a batch of crops, each compared with the style's Grams).
"""

from __future__ import annotations

import math

import torch

from .errors import EngineError


def gram(features: torch.Tensor) -> torch.Tensor:
    """BxCxHxW features -> BxCxC channel correlations, normalised by C*H*W (size-independent)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def relative_mse(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (value.float() - target).pow(2).sum() / (target.pow(2).sum() + 1e-8)


def content_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(relative_mse(features[name], target) for name, target in targets.items()) / len(targets)


def style_loss(
    features: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], layer_weights: dict[str, float]
) -> torch.Tensor:
    """Weighted mean over layers of each image's relative Gram error, averaged over the batch.

    `grams` hold one 1xCxC (or CxC) target per layer, shared by every image of the batch.
    """
    total = sum(layer_weights.values())
    return sum(layer_weights[name] * _gram_error(gram(features[name]), g) for name, g in grams.items()) / total


def _gram_error(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return relative_mse(value, target) / value.shape[0]


def tv_loss(image: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: suppresses high-frequency noise.

    `wrap` (seamless textures) also counts the last column/row against the first.
    """
    if wrap:
        dx = image - image.roll(1, dims=-1)
        dy = image - image.roll(1, dims=-2)
        return dx.pow(2).mean() + dy.pow(2).mean()
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def loss_terms(parts: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, float]:
    """The weighted loss terms and their total as numbers; a NaN or infinite one stops the run."""
    terms = {name: float(value.detach()) for name, value in parts.items()}
    terms["total"] = float(total.detach())
    bad = [name for name, value in terms.items() if not math.isfinite(value)]
    if bad:
        raise EngineError(f"the loss became NaN/infinite ({', '.join(bad)}); check the weights/options")
    return terms
