"""Gatys et al. image optimisation of one image (or tile) towards fixed targets, L-BFGS or Adam.

The image itself is the parameter.  `optimize_image` is the unit the tiler
calls per scale or tile and temporal coherence extends through extra losses;
the whole run (scales, tiles, colours) is `engine.pipeline.stylize`.

Convergence stop (`StopRule`): every `STOP_EVERY` iterations the picture is
compared with the one `STOP_EVERY` iterations before; once it changed by less
than `options.stop_change` 8-bit levels (mean absolute, sRGB as displayed) at
`STOP_CHECKS` looks in a row, more iterations would not show, so the scale (or
tile) ends there.  `iterations` stays the upper bound.  The skipped iterations
are reported as saved (`Progress.saved`), so the run's progress still ends at
its planned total (docs/engine.md, "Convergence stop").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import logging

import torch

from . import losses
from .errors import EngineError
from .networks import FeatureNet
from .options import StyleOptions
from .progress import Reporter
from .regions import Guide
from .tensors import Autocast, to_array

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
# Iterations between two looks at the picture, and looks in a row below `StyleOptions.stop_change` that end a
# scale: never before 2 x 10 iterations, and one still frame between two moving ones does not stop it.
STOP_EVERY = 10
STOP_CHECKS = 2

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
    before `iterations` when the picture has stopped changing (`StopRule`).
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

    rule = StopRule(options.stop_change, image)
    for done in range(1, iterations + 1):
        try:
            optimizer.step(closure)
        except EngineError as exc:  # a non-finite loss (losses.loss_terms)
            if options.precision == "fp16":
                raise EngineError(f"{exc}; fp16 activations can overflow: use bf16 or fp32") from None
            raise
        with torch.no_grad():
            image.clamp_(0, 1)
        stop = done < iterations and rule.still(done, image)
        if stop:
            log.info("the picture stopped changing after %d of %d iterations", done, iterations)
        reporter.step(dict(terms), lambda: to_array(image), skipped=iterations - done if stop else 0)
        if stop:
            break
    return image.detach()


class StopRule:
    """Whether the picture has stopped changing: looked at every `every` iterations, it moved by less than
    `levels` 8-bit levels (mean absolute over pixels and channels of the sRGB image, what a viewer sees) since
    the look before, `checks` looks in a row.  `levels` 0 never stops."""

    def __init__(self, levels: float, image: torch.Tensor, every: int = STOP_EVERY, checks: int = STOP_CHECKS):
        self.levels, self.every, self.checks = levels, every, checks
        self.last = image.detach().clone() if levels > 0 else None
        self.still_looks = 0
        self.changes: list[float] = []  # levels moved between looks, for benchmarks and logs

    def still(self, done: int, image: torch.Tensor) -> bool:
        """After iteration `done` (1-based) of the image `image`: True when the run should end here."""
        if self.last is None or done % self.every:
            return False
        with torch.no_grad():
            change = float((image - self.last).abs().mean()) * 255
            self.last.copy_(image)
        self.changes.append(change)
        self.still_looks = self.still_looks + 1 if change < self.levels else 0
        return self.still_looks >= self.checks
