"""Gatys et al. image optimisation of one image (or tile) towards fixed targets, L-BFGS or Adam.

The image itself is the parameter.  `optimize_image` is the unit the tiler
calls per scale or tile and temporal coherence extends through extra losses;
the whole run (scales, tiles, colours) is `engine.pipeline.stylize`.

Convergence stop: once the total loss fell by less than `options.stop_tolerance`
(relative) over the last `STOP_WINDOW` iterations, further iterations change the
picture too little to pay for themselves (benchmarks/bench_speed.py), so the
optimisation ends early and the run's progress total shrinks accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import logging

import torch

from . import losses
from .networks import FeatureNet
from .options import StyleOptions
from .progress import Reporter
from .regions import Guide
from .tensors import Autocast, to_array

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
# Iterations over which the relative loss decrease is compared with `StyleOptions.stop_tolerance`.
STOP_WINDOW = 10

log = logging.getLogger(__name__)

ExtraLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Targets:
    """What one scale (or tile) optimises towards: content features and the style Grams of the whole
    picture, or, with spatial control (engine/regions.py), one guide per styled region instead."""

    content: dict[str, torch.Tensor]
    grams: dict[str, torch.Tensor]
    guides: list[Guide] | None = None

    def style_loss(self, features: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
        if self.guides is None:
            return losses.style_loss(features, self.grams, layer_weights)
        return losses.guided_style_loss(features, self.guides, layer_weights)


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
    becomes NaN or infinite stops the run with an `EngineError`.  The loop ends
    before `iterations` when the loss has converged (`converged`).
    """
    image = image.detach().clone().requires_grad_(True)
    layers = tuple(dict.fromkeys((*targets.content, *layer_weights)))
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
            "style": options.style_weight * targets.style_loss(feats, layer_weights),
            "tv": options.tv_weight * losses.tv_loss(image, wrap=options.seamless),  # wraps when seamless
        }
        for i, extra in enumerate(extra_losses):
            parts["temporal" if i == 0 else f"extra{i}"] = extra(image)
        total = sum(parts.values())
        terms.update(losses.loss_terms(parts, total))
        total.backward()
        return total

    history: list[float] = []
    for done in range(1, iterations + 1):
        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
        history.append(terms["total"])
        stop = done < iterations and converged(history, options.stop_tolerance)
        if stop:  # before the report, so it already carries the shortened total
            log.info("converged after %d of %d iterations", done, iterations)
            reporter.total -= iterations - done
        reporter.step(dict(terms), lambda: to_array(image))
        if stop:
            break
    return image.detach()


def converged(history: list[float], tolerance: float, window: int = STOP_WINDOW) -> bool:
    """True when the best loss of the last `window` iterations beats the best before them by less than
    `tolerance` (relative); comparing bests keeps a noisy optimiser (Adam) from stopping on one bad step."""
    if tolerance <= 0 or len(history) <= window:
        return False
    before, now = min(history[:-window]), min(history[-window:])
    return before - now < tolerance * abs(now)
