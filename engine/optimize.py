"""Gatys et al. image optimisation of one image (or tile) towards fixed targets, L-BFGS or Adam.

The image itself is the parameter.  `optimize_image` is the unit the tiler
calls per scale or tile and temporal coherence extends through extra losses;
the whole run (scales, tiles, colours) is `engine.pipeline.stylize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import losses
from .networks import FeatureNet
from .options import StyleOptions
from .progress import Reporter
from .tensors import Autocast, to_array

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}

ExtraLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Targets:
    """What one scale (or tile) optimises towards."""

    content: dict[str, torch.Tensor]
    grams: dict[str, torch.Tensor]


def optimize_image(
    net: FeatureNet,
    image: torch.Tensor,
    targets: Targets,
    options: StyleOptions,
    layer_weights: dict[str, float],
    iterations: int,
    reporter: Reporter,
    autocast: Autocast,
    extra_losses: tuple[ExtraLoss, ...] = (),
) -> torch.Tensor:
    """Optimise `image` (1x3xHxW in [0, 1]) towards `targets`; returns the new image.

    `extra_losses` each map the image to a weighted scalar loss.  A loss that
    becomes NaN or infinite stops the run with an `EngineError`.
    """
    image = image.detach().clone().requires_grad_(True)
    layers = tuple(targets.content) + tuple(n for n in targets.grams if n not in targets.content)
    lr = options.learning_rate or DEFAULT_LR[options.optimizer]
    if options.optimizer == "lbfgs":
        optimizer = torch.optim.LBFGS([image], lr=lr, max_iter=1, history_size=50)
    else:
        optimizer = torch.optim.Adam([image], lr=lr)
    terms: dict[str, float] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            feats = net(image, layers)
        parts = {
            "content": options.content_weight * losses.content_loss(feats, targets.content),
            "style": options.style_weight * losses.style_loss(feats, targets.grams, layer_weights),
            "tv": options.tv_weight * losses.tv_loss(image),
        }
        for i, extra in enumerate(extra_losses):
            parts["temporal" if i == 0 else f"extra{i}"] = extra(image)
        total = sum(parts.values())
        terms.update(losses.loss_terms(parts, total))
        total.backward()
        return total

    for _ in range(iterations):
        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
        reporter.step(dict(terms), lambda: to_array(image))
    return image.detach()
