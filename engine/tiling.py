"""Tiled, memory-bounded optimisation of one scale, so any output size fits.

A scale whose optimisation would not fit in memory is optimised tile by tile
with `optimize_image`: content targets come from each content tile, style
Grams are computed once for the whole style image (by halo-padded cores when
even a forward pass over it would not fit), and optimised tiles are blended
back with feathered weights.  Several passes shift the grid so that no tile
border stays in the same place.  An out-of-memory error restarts the scale
with tiles half the size, so a bad memory estimate costs time, not the run.

Peak memory is then bounded by the tile size plus a few full-size image
buffers (3 or 4 float channels each), not by the image size.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from . import losses
from .networks import FeatureNet
from .optimize import ExtraLoss, Reporter, Targets, _style_at, optimize_image, to_tensor
from .options import StyleOptions
from .targets import TargetSource

log = logging.getLogger(__name__)

# Smallest tile tried; below this the net's deepest layers see only a few pixels.
MIN_TILE = 64
# Memory model, bytes per input pixel = factor * 4 * (floats of all module outputs per input
# pixel, see `NetGeometry.floats_per_pixel`) + optimiser state.  Calibrated on CPU from the
# peak-memory slope between 512 and 1024 px in `neural-style bench` (docs/benchmarks.md,
# "Memory model"): optimising measured 0.97-1.14 x (vgg19, vgg16, nin); target forward passes
# 0.31-0.48 x (torch) and 0.36 x (onnxruntime).  The factors round those up.
OPTIMIZE_FACTOR = 1.2
FORWARD_FACTOR = 0.5
# Allocator slack, weights and interpreter state not proportional to the image.
FIXED_BYTES = 600 * 2**20
# L-BFGS keeps 2 x history_size (50 in `optimize_image`) image-sized vectors plus ~6 work
# vectors; Adam keeps 2 moments plus the gradient.
OPTIMIZER_STATE_VECTORS = {"lbfgs": 2 * 50 + 6, "adam": 4}
# Share of the free memory a run plans to use; the rest absorbs estimate error and other users.
BUDGET_FRACTION = 0.6


class Box(NamedTuple):
    """A tile: rows y0:y1 and columns x0:x1 of the image."""

    y0: int
    y1: int
    x0: int
    x1: int

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[..., self.y0 : self.y1, self.x0 : self.x1]


@dataclass(frozen=True)
class NetGeometry:
    """What tiling needs to know about a (truncated) feature network."""

    floats_per_pixel: float  # sum over module outputs of channels / stride^2
    stride: int  # downsampling of the deepest module
    receptive_field: int  # input pixels seen by one output of the deepest module
    layer_strides: dict[str, int]  # downsampling at each named layer


def geometry(net: FeatureNet) -> NetGeometry:
    channels, stride, field_, floats = 3, 1, 1, 0.0
    strides: dict[str, int] = {}
    for name, module in zip(net.spec.layer_names, net.features):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, step = _pair(module.kernel_size), _pair(module.stride)
            field_ += (kernel - 1) * stride
            stride *= step
            channels = module.out_channels if isinstance(module, nn.Conv2d) else channels
        floats += channels / stride**2
        strides[name] = stride
    return NetGeometry(floats, stride, field_, strides)


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def bytes_per_pixel(geo: NetGeometry, optimizer: str | None) -> float:
    """Estimated peak bytes per input pixel: optimising (`optimizer` set) or a no-grad forward."""
    if optimizer is None:
        return FORWARD_FACTOR * 4 * geo.floats_per_pixel
    return OPTIMIZE_FACTOR * 4 * geo.floats_per_pixel + 4 * 3 * OPTIMIZER_STATE_VECTORS[optimizer]


def free_memory(device: torch.device) -> int:
    """Bytes this process could still allocate on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux (macOS has no /proc): free pages, else half of all memory
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def memory_budget(device: torch.device, options: StyleOptions) -> int:
    budget = int(free_memory(device) * BUDGET_FRACTION)
    if options.memory_limit_mb > 0:
        budget = min(budget, options.memory_limit_mb * 2**20)
    return budget


def tile_for_budget(budget: int, geo: NetGeometry, optimizer: str) -> int:
    """Largest square tile side (a multiple of the net's stride) whose optimisation fits `budget`."""
    side = math.isqrt(max(budget - FIXED_BYTES, 0) // math.ceil(bytes_per_pixel(geo, optimizer)))
    return max(MIN_TILE, side // geo.stride * geo.stride)


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


def is_out_of_memory(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in message or "not enough memory" in message


def cored_grams(
    net: FeatureNet, image: torch.Tensor, layers: tuple[str, ...], autocast, core: int, geo: NetGeometry
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


class Tiler:
    """Plans and runs each scale of one `stylize` call: whole when it fits, else in tiles.

    Targets come from the run's `TargetSource` (cached, onnxruntime) except the
    Grams of style images too large for one forward pass, which `cored_grams` computes.
    """

    def __init__(
        self,
        net: FeatureNet,
        source: TargetSource,
        layer_weights: dict[str, float],
        autocast,
        extra_losses: tuple[ExtraLoss, ...] = (),
    ):
        self.net = net
        self.source = source
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
            if size == -1:
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
        return FIXED_BYTES + pixels * bytes_per_pixel(self.geo, optimizer) <= self.budget

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
                    targets = Targets(self.source.content(content), self._grams(height, width, None))
                    return self._optimize(start, targets, self.options.iterations, reporter, self.extra_losses)
                return self._tiled(start, content, reporter, tile)
            except RuntimeError as exc:
                smaller = self._smaller_tile(tile, height, width)
                if not is_out_of_memory(exc) or smaller is None:
                    raise
            gc.collect()
            if start.device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning("out of memory at %dx%d; retrying with %d px tiles", width, height, smaller)
            self._plan(height, width, smaller)
            reporter.total += (reporter.count - done) + self.iterations(height, width) - planned

    def _smaller_tile(self, tile: int | None, height: int, width: int) -> int | None:
        if self.options.tile_size == -1:
            return None
        if tile is None:
            tile = min(tile_for_budget(self.budget, self.geo, self.options.optimizer), max(height, width))
        smaller = tile // 2 // self.geo.stride * self.geo.stride
        return smaller if smaller >= MIN_TILE else None

    def _grams(self, height: int, width: int, tile: int | None) -> dict[str, torch.Tensor]:
        """Blended style Grams for the scale; by cores for style images too large for one forward pass."""
        scale = self.options.style_scale
        if all(self._fits(_style_at_pixels(s, height, width, scale), None) for s in self.source.styles):
            return self.source.grams(height, width)
        core = tile or tile_for_budget(self.budget, self.geo, self.options.optimizer)
        total = sum(self.source.blend)
        grams: dict[str, torch.Tensor] = {}
        for style, weight in zip(self.source.styles, self.source.blend):
            style_t = to_tensor(_style_at(style, height, width, scale), self.source.device)
            for name, g in cored_grams(self.net, style_t, self.source.style_layers, self.autocast, core, self.geo).items():
                grams[name] = grams.get(name, 0) + g * (weight / total)
        return grams

    def _optimize(self, image, targets: Targets, iterations: int, reporter: Reporter, extra) -> torch.Tensor:
        return optimize_image(
            self.net, image, targets, self.options, self.layer_weights, iterations, reporter, self.autocast, extra
        )

    def _tiled(self, start: torch.Tensor, content: torch.Tensor, reporter: Reporter, tile: int) -> torch.Tensor:
        height, width = start.shape[-2:]
        overlap = self.overlap(tile)
        grams = self._grams(height, width, tile)
        stage = reporter.stage
        image = start
        for p in range(self.passes):
            boxes = grid(height, width, tile, overlap, p, self.passes)
            blended = torch.zeros_like(image)
            weights = torch.zeros((1, 1, height, width), device=image.device)
            for k, box in enumerate(boxes):
                reporter.stage = f"{stage}, tile {k + 1}/{len(boxes)}, pass {p + 1}/{self.passes}"
                targets = Targets(self.source.content(box.of(content)), grams)
                extra = tuple(_in_context(loss, image, box) for loss in self.extra_losses)
                out = self._optimize(box.of(image), targets, self.tile_iterations(), reporter, extra)
                w = feather(box, height, width, overlap, image.device)
                box.of(blended).add_(out * w)
                box.of(weights).add_(w)
            image = blended / weights
        reporter.stage = stage
        return image


def _style_at_pixels(style, height: int, width: int, scale: float) -> float:
    """Pixel count of `_style_at(style, height, width, scale)` without resizing."""
    sh, sw = style.shape[:2]
    factor = scale * max(height, width) / max(sh, sw)
    return sh * sw * factor**2


def _in_context(loss: ExtraLoss, image: torch.Tensor, box: Box) -> ExtraLoss:
    """A whole-image loss applied to a tile: the tile is pasted into the pass's start image."""

    def tile_loss(tile: torch.Tensor) -> torch.Tensor:
        whole = image.clone()
        box.of(whole).copy_(tile)
        return loss(whole)

    return tile_loss
