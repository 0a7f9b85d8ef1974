"""One whole stylization: checks, network set-up, coarse-to-fine scales, colours and alpha.

Each scale resizes the content, starts from the previous scale's result
(upsampled) and lets the `Tiler` optimise it, whole or in tiles; targets come
from the run's `TargetSource`.  Progress is reported once per iteration
through one `Reporter`, which also checks the caller's cancel flag.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import hdr, regions as spatial, seamless
from .errors import EngineError
from .images import read_image, resize
from .memory import is_out_of_memory
from .model import prepare_network
from .optimize import ExtraLoss
from .options import StyleOptions
from .progress import CancelFn, ProgressFn, Reporter
from .targets import TargetSource
from .tensors import autocast_factory, check_image, pick_device, to_array, to_tensor
from .tiling import Tiler, TileRunner


def stylize(
    content: np.ndarray,
    styles: list[np.ndarray],
    options: StyleOptions,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    init_image: np.ndarray | None = None,
    extra_losses: tuple[ExtraLoss, ...] = (),
    tile_runner: TileRunner | None = None,
    regions: list[spatial.Region] | None = None,
) -> np.ndarray:
    """See `engine.stylize`.  `init_image` and `extra_losses` serve temporal coherence; `tile_runner`
    optimises the tiles of tiled scales elsewhere (engine/distributed.py); `regions` give parts of the
    picture their own styles (engine/regions.py)."""
    content, restore = hdr.to_display(content)  # values above 1: stylize a display version (engine/hdr.py)
    content = check_image("content image", content)
    if not styles:
        raise EngineError("at least one style image is needed")
    styles = [check_image(f"style image {i + 1}", hdr.to_display(s)[0]) for i, s in enumerate(styles)]
    blend = list(options.style_blend_weights or [1.0] * len(styles))
    if len(blend) != len(styles) or sum(blend) <= 0:
        raise EngineError("give one positive style blend weight per style image")
    if regions is not None:
        regions = spatial.check_regions(regions, len(styles), *content.shape[:2])
    if options.seed is not None:
        torch.manual_seed(options.seed)
        np.random.seed(options.seed % 2**32)

    device = pick_device(options.device)
    autocast = autocast_factory(device, options.precision)
    net, plan, _ = prepare_network(options, device)
    source = TargetSource(net, options, styles, blend, device, autocast)
    tiler = Tiler(net, source, plan.weights, autocast, extra_losses, tile_runner, regions)

    height, width = output_shape(content, options)
    sizes = scale_sizes(height, width, options)
    resize_rgb = resize  # a seamless run wraps around (engine/seamless.py)
    if options.seamless:
        sizes, resize_rgb = seamless.torus_sizes(sizes, tiler.geo.stride), seamless.periodic_resize
    reporter = Reporter(sum(tiler.iterations(h, w) for h, w in sizes), progress, cancel)
    reporter.check_cancel()
    rgb = content[..., :3]
    result: torch.Tensor | None = None
    for index, (h, w) in enumerate(sizes):
        reporter.at_scale(index + 1, len(sizes), h, w)
        content_t = to_tensor(resize_rgb(rgb, h, w), device)
        if result is None:
            start = _initial_image(content_t, options, init_image, h, w, device)
        elif options.seamless:
            start = seamless.periodic_upsample(result, h, w)
        else:
            start = torch.nn.functional.interpolate(result, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        try:
            result = tiler.optimize(start, content_t, reporter)
        except RuntimeError as exc:
            raise _runtime_error(exc, h, w) from None
    if options.seamless and result.shape[-2:] != (height, width):  # last scale rounded to the stride
        result = seamless.periodic_upsample(result, height, width)
    out = to_array(result)
    if options.preserve_colors:
        out = preserve_colors(out, resize(rgb, height, width))
    if regions is not None:  # keep regions stay as the content
        out = spatial.keep_content(out, resize(rgb, height, width), spatial.keep_mask(regions, height, width))
    if content.shape[2] == 4:
        out = np.concatenate([out, resize(content[..., 3:], height, width)], axis=2)
    return restore(out)


def scale_sizes(height: int, width: int, options: StyleOptions) -> list[tuple[int, int]]:
    """Sizes of the coarse-to-fine pyramid, ending at (height, width)."""
    longest = max(height, width)
    count = options.scales
    if count is None:
        count = 1 if longest <= 2 * options.min_scale_size else math.ceil(math.log2(longest / options.min_scale_size)) + 1
    count = max(1, min(count, 1 + int(math.log2(max(longest / 64, 1)))))
    sizes = []
    for i in range(count):
        factor = 2.0 ** (i - count + 1)
        sizes.append((max(16, round(height * factor)), max(16, round(width * factor))))
    return sizes


def output_shape(content: np.ndarray, options: StyleOptions) -> tuple[int, int]:
    """Height and width of the result: the content's, or scaled so the longest side is `options.size`."""
    h, w = content.shape[:2]
    if options.size is None:
        return h, w
    factor = options.size / max(h, w)
    return max(16, round(h * factor)), max(16, round(w * factor))


def preserve_colors(result: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance-only transfer: the result's luma with the content's chroma (YIQ)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    yiq_result = result @ to_yiq.T
    yiq_content = content @ to_yiq.T
    merged = np.concatenate([yiq_result[..., :1], yiq_content[..., 1:]], axis=2)
    return np.clip(merged @ np.linalg.inv(to_yiq).T, 0, 1).astype(np.float32)


def _initial_image(content_t, options, init_image, h, w, device) -> torch.Tensor:
    if init_image is not None:
        return to_tensor(resize(check_image("initial image", init_image)[..., :3], h, w), device)
    if options.init == "image":
        return to_tensor(resize(read_image(options.init_image)[..., :3], h, w), device)
    if options.init == "noise":
        gen = torch.Generator().manual_seed(options.seed or 0)
        return torch.rand(content_t.shape, generator=gen).to(device)
    return content_t.clone()


def _runtime_error(exc: RuntimeError, h: int, w: int) -> Exception:
    if is_out_of_memory(exc):
        return EngineError(f"out of memory at {w}x{h}; use a smaller size, tiling or the CPU")
    message = str(exc)
    if "Output size is too small" in message or "smaller than kernel" in message.lower():
        return EngineError(f"image too small for this model at {w}x{h}; use a larger size")
    return exc
