"""Gatys et al. image optimisation of one image (or tile) towards fixed targets, L-BFGS or Adam.

The image itself is the parameter.  `optimize_image` is the unit the tiler
calls per scale or tile and temporal coherence extends through extra losses;
the whole run (scales, tiles, colours) is `engine.pipeline.stylize`.

Convergence stop (`StopRule`): every `STOP_EVERY` iterations the rule looks at
the picture's style statistics (the Gram matrices of the style layers, which
the forward pass has already computed the features for) and compares them
with the previous look's; once they moved by less than `options.stop_change`
percent at `STOP_CHECKS` looks in a row, the picture's look has settled and
the scale (or tile) ends.  `iterations` stays the upper bound.  Skipped
iterations are reported as saved (`Progress.saved`), so the run's progress still
ends at its planned total (docs/engine.md, "Convergence stop").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import losses
from .errors import EngineError
from .networks import FeatureNet
from .options import StyleOptions
from .progress import Reporter
from .regions import Guide
from .tensors import Autocast, to_array

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
# L-BFGS takes full steps without a line search; now and then a step overshoots and the loss jumps (up to 10x on
# some pairs, then wanders).  A loss this far above the best one seen sends the image back to the best and starts
# L-BFGS's history afresh (docs/engine.md, "Restarts").
RESTART_JUMP = 0.1
# Iterations between two looks at the picture, and looks in a row below `StyleOptions.stop_change` that end a
# scale: the first look is the starting picture, so a scale never ends before 2 x 10 + 1 iterations, and one
# settled look between two moving ones does not end it.
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
    before `iterations` once the picture's look has settled (`StopRule`).
    """
    image = image.detach().clone().requires_grad_(True)
    layers = tuple(dict.fromkeys((*targets.content, *layer_weights)))
    lr = options.learning_rate or DEFAULT_LR[options.optimizer]

    def new_optimizer() -> torch.optim.Optimizer:
        if options.optimizer == "lbfgs":
            return torch.optim.LBFGS([image], lr=lr, max_iter=1, history_size=50)
        return torch.optim.Adam([image], lr=lr)

    optimizer = new_optimizer()
    terms: dict[str, float] = {}
    best = Best(image) if options.optimizer == "lbfgs" else None

    rule = StopRule(options.stop_change)
    style_layers = tuple(layer_weights)
    look = False  # whether this step's evaluation shows the rule the picture

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            feats = net(image, layers)
        if look:
            rule.look({name: feats[name] for name in style_layers})
        parts = {
            "content": options.content_weight * losses.content_loss(feats, targets.content),
            "style": options.style_weight * targets.style_loss(feats, layer_weights),
            "tv": options.tv_weight * losses.tv_loss(image, wrap=options.seamless),  # wraps when seamless
        }
        for i, extra in enumerate(extra_losses):
            parts["temporal" if i == 0 else f"extra{i}"] = extra(image)
        total = sum(parts.values())
        terms.update(losses.loss_terms(parts, total))
        if best is not None:
            best.see(terms["total"], image)
        total.backward()
        return total

    for done in range(1, iterations + 1):
        look = rule.looks_at(done)
        try:
            optimizer.step(closure)
        except EngineError as exc:  # a non-finite loss (losses.loss_terms)
            if options.precision == "fp16":
                raise EngineError(f"{exc}; fp16 activations can overflow: use bf16 or fp32") from None
            raise
        with torch.no_grad():
            image.clamp_(0, 1)
        if best is not None and best.jumped(terms["total"]):
            best.restore(image)
            optimizer = new_optimizer()
            log.info("loss jumped to %.4g (best %.4g) at iteration %d: back to the best image, fresh L-BFGS history",
                     terms["total"], best.loss, done)
        stop = look and done < iterations and rule.settled
        if stop:
            log.info("the picture's look settled after %d of %d iterations", done, iterations)
        reporter.step(dict(terms), lambda: to_array(image), skipped=iterations - done if stop else 0)
        if stop:
            break
    return image.detach()


class Best:
    """The image with the lowest loss seen so far, to return to when L-BFGS overshoots (`RESTART_JUMP`)."""

    def __init__(self, image: torch.Tensor):
        self.loss = math.inf
        self.image = torch.empty_like(image, requires_grad=False)

    def see(self, loss: float, image: torch.Tensor) -> None:
        """`loss` was just evaluated at `image` (before the optimiser's update)."""
        if loss < self.loss:
            self.loss = loss
            self.image.copy_(image.detach())

    def jumped(self, loss: float) -> bool:
        return loss > (1 + RESTART_JUMP) * self.loss

    def restore(self, image: torch.Tensor) -> None:
        with torch.no_grad():
            image.copy_(self.image)


class StopRule:
    """Whether the picture's look has settled.

    The look is the picture's style statistics: the Gram matrices of the style layers, the texture model the
    style loss matches (colours, strokes, patterns at every scale), which do not change when strokes merely
    shift place.  Pixels keep moving long after the look has settled (docs/benchmarks.md, "Time to quality
    and the convergence stop"), so they are not what the rule watches.  Every `every` iterations (the first
    look being the starting picture) the change since the previous look is the root mean square over layers
    of |G - G_previous| / |G_previous|, in percent; `checks` looks in a row below `percent` settle the
    picture.  `percent` 0 never settles.
    """

    def __init__(self, percent: float, every: int = STOP_EVERY, checks: int = STOP_CHECKS):
        self.percent, self.every, self.checks = percent, every, checks
        self.last: dict[str, torch.Tensor] | None = None
        self.settled_looks = 0
        self.changes: list[float] = []  # percent moved between looks, for benchmarks and logs

    def looks_at(self, done: int) -> bool:
        """Whether the evaluation of step `done` (1-based; it sees the picture after `done - 1` steps) is a look."""
        return self.percent > 0 and (done - 1) % self.every == 0

    def look(self, features: dict[str, torch.Tensor]) -> None:
        """Take the look: `features` are the style layers' features of the picture as it is now."""
        with torch.no_grad():
            grams = {name: losses.gram(f.detach()) for name, f in features.items()}
            if self.last is not None:
                ratios = [float((grams[n] - self.last[n]).pow(2).sum() / (self.last[n].pow(2).sum() + 1e-12))
                          for n in grams]
                change = 100 * math.sqrt(sum(ratios) / len(ratios))
                self.changes.append(change)
                self.settled_looks = self.settled_looks + 1 if change < self.percent else 0
        self.last = grams

    @property
    def settled(self) -> bool:
        return self.settled_looks >= self.checks
