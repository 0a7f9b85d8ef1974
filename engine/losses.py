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


class _Gram(torch.autograd.Function):
    """F F^T of BxCxN features.  Autograd would differentiate the two factors apart, two matrix products of
    the size of the forward one; the result is symmetric, so one product gives the gradient:
    d/dF = (G' + G'^T) F, one product of the forward's size less per style layer and step.  The losses'
    upstream gradients are symmetric, so L-BFGS results are the same to the last bit (docs/benchmarks.md,
    "Speed"; tests/test_engine.py checks the general case)."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return torch.bmm(flat, flat.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), flat)


def channel_products(flat: torch.Tensor) -> torch.Tensor:
    """BxCxN -> BxCxC: F F^T (unnormalised), with the one-product gradient of `_Gram`."""
    return _Gram.apply(flat)


def gram(features: torch.Tensor) -> torch.Tensor:
    """BxCxHxW features -> BxCxC channel correlations, normalised by C*H*W (size-independent)."""
    b, c, h, w = features.shape
    return channel_products(features.reshape(b, c, h * w).float()) / (c * h * w)


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


def guided_style_loss(features: dict[str, torch.Tensor], guides, layer_weights: dict[str, float]) -> torch.Tensor:
    """The style loss of several regions (`engine.regions.Guide`s), each against its own Grams.

    Per layer, a region's guided Gram is the Gram of the features weighted by the region's mask at that
    layer's resolution, divided by the mask's energy instead of the pixel count, so it estimates the Gram of
    the region alone.  Each region's error is weighted by its share of the layer and its own weight; one
    region covering everything gives `style_loss`.
    """
    total = sum(layer_weights.values())
    loss = None
    for name, weight in layer_weights.items():
        f = features.get(name)
        if f is None or weight == 0:
            continue
        b, c, h, w = f.shape
        for guide in guides:
            mask, area, energy = guide.at(h, w)
            if area < MIN_GUIDE_AREA:
                continue
            g = channel_products((f.float() * mask).reshape(b, c, h * w)) / (c * energy)
            term = (guide.weight * area * weight) * _gram_error(g, guide.grams[name])
            loss = term if loss is None else loss + term
    if loss is None:
        return features[next(iter(features))].sum() * 0  # no region has pixels here: no style pull
    return loss / total


# A region covering less than this share of a layer is skipped there (nothing to estimate a Gram from).
MIN_GUIDE_AREA = 1e-4


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
