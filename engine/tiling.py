"""Tiled, memory-bounded optimisation of one scale, so any output size fits.

A scale whose optimisation would not fit in memory is optimised tile by tile
with `optimize_image`: content targets come from each content tile, style
Grams are computed once for the whole style image (by halo-padded cores when
even a forward pass over it would not fit), and optimised tiles are blended
back with feathered weights.  Several passes shift the grid so that no tile
border stays in the same place.  An out-of-memory error restarts the scale
with tiles half the size, so a bad memory estimate costs time, not the run.

Peak memory is then bounded by the tile size plus a few full-size image
buffers (3 or 4 float channels each), not by the image size; the memory model
that picks the tile size is in `engine.memory`.
"""

from __future__ import annotations

import gc
import logging
import math
from typing import Callable, NamedTuple

import torch

from . import losses
from .memory import (MIN_TILE, NetGeometry, fits, geometry, is_out_of_memory, memory_budget, release_cache,
                     tile_for_budget)
from .networks import FeatureNet
from .optimize import ExtraLoss, Targets, optimize_image
from .progress import Reporter
from .regions import Guide, Region, mask_tensor
from .targets import StyleMix, TargetSource, blend_grams, style_at, style_size
from .tensors import Autocast, to_tensor

log = logging.getLogger(__name__)


class Box(NamedTuple):
    """A tile: rows y0:y1 and columns x0:x1 of the image."""

    y0: int
    y1: int
    x0: int
    x1: int

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[..., self.y0 : self.y1, self.x0 : self.x1]


def axis_spans(length: int, tile: int, overlap: int, phase: float = 0.0) -> list[tuple[int, int]]:
    """Spans [lo, hi) covering [0, length) with the fewest tiles of at most `tile` pixels.

    The spans are shortened to share the length evenly (no tile wasted on a sliver),
    then the grid moves by `phase` (0 to 1) of a step; spans cut by the image edge keep at least half
    a span (widened inwards), which only adds overlap with their neighbour.
    """
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    span = math.ceil((length + (count - 1) * overlap) / count)
    step = span - overlap
    shift = round(phase * step) % step
    start = shift - step if shift else 0
    spans = []
    while True:
        lo, hi = max(start, 0), min(start + span, length)
        if hi - lo < span // 2:
            lo, hi = (0, span // 2) if lo == 0 else (length - span // 2, length)
        spans.append((lo, hi))
        if start + span >= length:
            return spans
        start += step


def grid(height: int, width: int, tile: int, overlap: int, pass_index: int, passes: int) -> list[Box]:
    """The tiles of one pass; each pass shifts the grid by a further 1/passes of a tile step."""
    rows = axis_spans(height, tile, overlap, pass_index / passes)
    cols = axis_spans(width, tile, overlap, pass_index / passes)
    return [Box(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


def feather(box: Box, height: int, width: int, overlap: int, device: torch.device) -> torch.Tensor:
    """1x1xhxw blend weights: linear ramps over `overlap` pixels on sides facing another tile.

    Weights stay positive, so every covered pixel gets a positive total weight.
    """

    def ramp(lo: int, hi: int, length: int) -> torch.Tensor:
        n = hi - lo
        index = torch.arange(n, dtype=torch.float32, device=device)
        w = torch.ones(n, device=device)
        if lo > 0:
            w = torch.minimum(w, (index + 1) / (overlap + 1))
        if hi < length:
            w = torch.minimum(w, (n - index) / (overlap + 1))
        return w

    return (ramp(box.y0, box.y1, height)[:, None] * ramp(box.x0, box.x1, width)[None, :])[None, None]


def cored_grams(
    net: FeatureNet, image: torch.Tensor, layers: tuple[str, ...], autocast: Autocast, core: int, geo: NetGeometry
) -> dict[str, torch.Tensor]:
    """The Gram matrices `losses.gram` would give for the whole image, a core at a time.

    Each core is run with a halo as wide as the receptive field and starts on a
    multiple of the net's stride, so the features kept (those of the core) are
    exactly the whole-image features; partial Grams are summed pixel-weighted.
    """
    step = geo.stride
    halo = math.ceil(geo.receptive_field / step) * step
    core = max(step, core // step * step)
    height, width = image.shape[-2:]
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)
    for y in range(0, height, core):
        for x in range(0, width, core):
            outer = Box(max(0, y - halo), min(height, y + core + halo), max(0, x - halo), min(width, x + core + halo))
            with torch.no_grad(), autocast():
                feats = net(outer.of(image), layers)
            for name in layers:
                s = geo.layer_strides[name]
                y_end = None if y + core >= height else (y + core - outer.y0) // s
                x_end = None if x + core >= width else (x + core - outer.x0) // s
                part = feats[name][..., (y - outer.y0) // s : y_end, (x - outer.x0) // s : x_end]
                pixels = part.shape[-2] * part.shape[-1]
                if pixels:
                    g = losses.gram(part) * pixels
                    sums[name] = sums[name] + g if name in sums else g
                    counts[name] += pixels
    return {name: sums[name] / counts[name] for name in layers}


# Optimises the tiles of one pass elsewhere (engine/distributed.py: on Ray nodes): (start tiles, content tiles,
# the scale's style Grams, iterations per tile, the run's Reporter, with regions each tile's guides or None)
# -> the optimised tiles, in order.
TileRunner = Callable[[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor], int, Reporter,
                       list[list[Guide]] | None], list[torch.Tensor]]


class Tiler:
    """Plans and runs each scale of one `stylize` call: whole when it fits, else in tiles.

    Targets come from the run's `TargetSource` (cached, onnxruntime) except the
    Grams of style images too large for one forward pass, which `cored_grams` computes.
    With `regions` (checked masks at the content's size, engine/regions.py) each
    styled region gets its own guide per scale, cut to each tile.
    """

    def __init__(
        self,
        net: FeatureNet,
        source: TargetSource,
        layer_weights: dict[str, float],
        autocast: Autocast,
        extra_losses: tuple[ExtraLoss, ...] = (),
        tile_runner: TileRunner | None = None,
        regions: list[Region] | None = None,
    ):
        self.net = net
        self.regions = regions
        self.source = source
        self.tile_runner = tile_runner
        self.options = source.options
        self.layer_weights = layer_weights
        self.autocast = autocast
        self.extra_losses = extra_losses
        self.geo = geometry(net)
        self.budget = memory_budget(source.device, self.options)
        self.tiles: dict[tuple[int, int], int | None] = {}

    @property
    def passes(self) -> int:
        return self.options.tile_passes

    def tile(self, height: int, width: int) -> int | None:
        """Tile side for a scale, or None to optimise it whole; decided once per size."""
        if (height, width) not in self.tiles:
            size = self.options.tile_size
            if size == -1 or self.options.seamless:  # a seamless (torus) image is never tiled
                tile = None
            elif size > 0:
                tile = size if max(height, width) > size else None
            elif self._fits(height * width, self.options.optimizer):
                tile = None
            else:
                tile = tile_for_budget(self.budget, self.geo, self.options.optimizer)
            self._plan(height, width, tile)
        return self.tiles[(height, width)]

    def _plan(self, height: int, width: int, tile: int | None) -> None:
        self.tiles[(height, width)] = tile
        if tile is not None:
            log.info(
                "%dx%d in %d px tiles, %d passes (memory budget %.1f GiB)",
                width, height, tile, self.passes, self.budget / 2**30,
            )

    def _fits(self, pixels: float, optimizer: str | None) -> bool:
        return fits(self.budget, self.geo, pixels, optimizer)

    def tile_iterations(self) -> int:
        """Iterations per tile per pass: each pixel gets about `options.iterations` in all."""
        return math.ceil(self.options.iterations / self.passes)

    def overlap(self, tile: int) -> int:
        return min(self.options.tile_overlap, tile // 4)

    def iterations(self, height: int, width: int) -> int:
        """Optimiser steps the scale will take (for the progress total)."""
        tile = self.tile(height, width)
        if tile is None:
            return self.options.iterations
        overlap = self.overlap(tile)
        boxes = sum(len(grid(height, width, tile, overlap, p, self.passes)) for p in range(self.passes))
        return boxes * self.tile_iterations()

    def optimize(self, start: torch.Tensor, content: torch.Tensor, reporter: Reporter) -> torch.Tensor:
        """Optimise one scale; an out-of-memory error retries it with smaller tiles."""
        height, width = start.shape[-2:]
        while True:
            tile = self.tile(height, width)
            planned, done = self.iterations(height, width), reporter.count
            try:
                if tile is None:
                    targets = Targets(self.source.content(content), *self._style_targets(height, width, None))
                    return self._optimize(start, targets, self.options.iterations, reporter, self.extra_losses)
                return self._tiled(start, content, reporter, tile)
            except RuntimeError as exc:
                smaller = self._smaller_tile(tile, height, width)
                if not is_out_of_memory(exc) or smaller is None:
                    raise
            gc.collect()
            release_cache(start.device)
            log.warning("out of memory at %dx%d; retrying with %d px tiles", width, height, smaller)
            self._plan(height, width, smaller)
            reporter.total += (reporter.count - done) + self.iterations(height, width) - planned

    def _smaller_tile(self, tile: int | None, height: int, width: int) -> int | None:
        if self.options.tile_size == -1 or self.options.seamless:  # never tiled
            return None
        if tile is None:
            tile = min(tile_for_budget(self.budget, self.geo, self.options.optimizer), max(height, width))
        smaller = tile // 2 // self.geo.stride * self.geo.stride
        return smaller if smaller >= MIN_TILE else None

    def _style_targets(self, height: int, width: int, tile: int | None) -> tuple[dict, list[Guide] | None]:
        """(the scale's style Grams, None), or with regions ({}, one guide per styled region)."""
        if self.regions is None:
            return self._grams(height, width, tile), None
        device = self.source.device
        guides = []
        for region in self.regions:
            if region.keep:
                continue
            blend = region.blend or (1.0,) * len(region.styles)
            mix = StyleMix(region.styles, blend, region.style_scale or self.options.style_scale)
            mask = mask_tensor(region.mask, height, width, device)
            guides.append(Guide(self._grams(height, width, tile, mix), mask, region.weight))
        return {}, guides

    def _grams(self, height: int, width: int, tile: int | None, mix: StyleMix | None = None) -> dict[str, torch.Tensor]:
        """Blended style Grams of `mix` (default: the run's) for the scale; by cores for style images too large
        for one forward pass."""
        mix = mix or self.source.mix
        styles = [self.source.styles[i] for i in mix.indices]
        if all(self._fits(math.prod(style_size(s, height, width, mix.scale)), None) for s in styles):
            return self.source.grams(height, width, mix)
        core = tile or tile_for_budget(self.budget, self.geo, self.options.optimizer)

        def by_cores(style) -> dict[str, torch.Tensor]:
            style_t = to_tensor(style_at(style, height, width, mix.scale), self.source.device)
            return cored_grams(self.net, style_t, self.source.style_layers, self.autocast, core, self.geo)

        return blend_grams(map(by_cores, styles), mix.blend)

    def _optimize(self, image, targets: Targets, iterations: int, reporter: Reporter, extra) -> torch.Tensor:
        return optimize_image(
            self.net, image, targets, self.options, self.layer_weights, iterations, reporter, self.autocast, extra
        )

    def _tiled(self, start: torch.Tensor, content: torch.Tensor, reporter: Reporter, tile: int) -> torch.Tensor:
        height, width = start.shape[-2:]
        overlap = self.overlap(tile)
        grams, guides = self._style_targets(height, width, tile)
        image = start
        for p in range(self.passes):
            boxes = grid(height, width, tile, overlap, p, self.passes)
            blended = torch.zeros_like(image)
            weights = torch.zeros((1, 1, height, width), device=image.device)
            if self.tile_runner is not None and not self.extra_losses:
                # Every tile of a pass starts from the same image, so they can run anywhere at once.
                reporter.at_tile(0, len(boxes), tile, p + 1, self.passes)
                tile_guides = None if guides is None else [[g.crop(box.of) for g in guides] for box in boxes]
                outs = self.tile_runner([box.of(image) for box in boxes], [box.of(content) for box in boxes], grams,
                                        self.tile_iterations(), reporter, tile_guides)
                for box, out in zip(boxes, outs):
                    w = feather(box, height, width, overlap, image.device)
                    box.of(blended).add_(out.to(image.device) * w)
                    box.of(weights).add_(w)
                image = blended / weights
                continue
            for k, box in enumerate(boxes):
                reporter.at_tile(k + 1, len(boxes), tile, p + 1, self.passes)
                tile_guides = None if guides is None else [g.crop(box.of) for g in guides]
                targets = Targets(self.source.content(box.of(content)), grams, tile_guides)
                extra = tuple(_in_context(loss, image, box) for loss in self.extra_losses)
                out = self._optimize(box.of(image), targets, self.tile_iterations(), reporter, extra)
                w = feather(box, height, width, overlap, image.device)
                box.of(blended).add_(out * w)
                box.of(weights).add_(w)
            image = blended / weights
        return image


def _in_context(loss: ExtraLoss, image: torch.Tensor, box: Box) -> ExtraLoss:
    """A whole-image loss applied to a tile: the tile is pasted into the pass's start image."""

    def tile_loss(tile: torch.Tensor) -> torch.Tensor:
        whole = image.clone()
        box.of(whole).copy_(tile)
        return loss(whole)

    return tile_loss
