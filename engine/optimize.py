"""Gatys et al. image optimisation: coarse-to-fine scales, L-BFGS or Adam.

The image itself is the parameter.  Each scale resizes content and styles,
computes targets once, then optimises; the result is upsampled to start the
next scale.  Progress is reported once per iteration through `Reporter`,
which also checks the caller's cancel flag.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import losses
from .errors import Cancelled, EngineError
from .images import read_image, resize
from .networks import FeatureNet
from .options import StyleOptions
from .progress import CancelFn, Progress, ProgressFn
from .weights import load_network

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}

ExtraLoss = Callable[[torch.Tensor], torch.Tensor]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA GPU is available to this PyTorch build")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("device 'mps' requested but Metal is not available")
    return torch.device(name)


class Reporter:
    """Counts iterations across the whole run, reports progress and honours cancellation."""

    def __init__(self, total: int, progress: ProgressFn | None, cancel: CancelFn | None):
        self.total = total
        self.count = 0
        self.start = time.perf_counter()
        self.progress = progress
        self.cancel = cancel
        self.stage = ""
        self.last_losses: dict[str, float] = {}
        self.history: list[float] = []

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")

    def step(self, losses_: dict[str, float], image_fn: Callable[[], np.ndarray]) -> None:
        self.count += 1
        self.last_losses = losses_
        self.history.append(losses_["total"])
        if self.progress is not None:
            self.progress(Progress(self.count, self.total, losses_, time.perf_counter() - self.start, self.stage, image_fn))
        self.check_cancel()


@dataclass
class Targets:
    """What one scale (or tile) optimises towards."""

    content: dict[str, torch.Tensor]
    grams: dict[str, torch.Tensor]


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image[..., :3].transpose(2, 0, 1))).unsqueeze(0).to(device)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().squeeze(0).clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()


def layer_plan(net: FeatureNet, options: StyleOptions) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, float]]:
    spec = net.spec
    content_layers = options.content_layers or spec.content_layers
    style_layers = options.style_layers or spec.style_layers
    weights = options.style_layer_weights or (
        spec.style_layer_weights if options.style_layers is None else (1.0,) * len(style_layers)
    )
    for name in content_layers + style_layers:
        net.layer_index(name)
    return content_layers, style_layers, dict(zip(style_layers, weights))


def style_grams(
    net: FeatureNet, styles: list[torch.Tensor], blend: list[float], layers: tuple[str, ...], autocast
) -> dict[str, torch.Tensor]:
    """Blend-weighted Gram matrices of all style images, per layer."""
    total = sum(blend)
    grams: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for style, weight in zip(styles, blend):
            with autocast():
                feats = net(style, layers)
            for name in layers:
                g = losses.gram(feats[name]) * (weight / total)
                grams[name] = grams[name] + g if name in grams else g
    return grams


def content_targets(net: FeatureNet, content: torch.Tensor, layers: tuple[str, ...], autocast) -> dict[str, torch.Tensor]:
    with torch.no_grad(), autocast():
        feats = net(content, layers)
    return {name: feats[name].float() for name in layers}


def optimize_image(
    net: FeatureNet,
    image: torch.Tensor,
    targets: Targets,
    options: StyleOptions,
    layer_weights: dict[str, float],
    iterations: int,
    reporter: Reporter,
    autocast,
    extra_losses: tuple[ExtraLoss, ...] = (),
) -> torch.Tensor:
    """Optimise `image` (1x3xHxW in [0, 1]) towards `targets`; returns the new image.

    This is the unit the tiler calls per tile and the temporal mode extends
    through `extra_losses` (each maps the image to a weighted scalar loss).
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
        total.backward()
        terms.update({k: float(v.detach()) for k, v in parts.items()}, total=float(total.detach()))
        return total

    for _ in range(iterations):
        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
        reporter.step(dict(terms), lambda: to_array(image))
    return image.detach()


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


def _check_image(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise EngineError(f"{name} must be an HxWx3 or HxWx4 array, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise EngineError(f"{name} contains NaN or infinite values")
    return np.clip(image.astype(np.float32), 0, 1)


def stylize(
    content: np.ndarray,
    styles: list[np.ndarray],
    options: StyleOptions,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    init_image: np.ndarray | None = None,
    extra_losses: tuple[ExtraLoss, ...] = (),
) -> np.ndarray:
    """See `engine.stylize`.  `init_image` and `extra_losses` serve temporal coherence."""
    content = _check_image("content image", content)
    if not styles:
        raise EngineError("at least one style image is needed")
    styles = [_check_image(f"style image {i + 1}", s) for i, s in enumerate(styles)]
    blend = list(options.style_blend_weights or [1.0] * len(styles))
    if len(blend) != len(styles) or sum(blend) <= 0:
        raise EngineError("give one positive style blend weight per style image")
    if options.seed is not None:
        torch.manual_seed(options.seed)
        np.random.seed(options.seed % 2**32)

    device = pick_device(options.device)
    autocast = _autocast_factory(device, options.precision)
    net = load_network(options.model, options.weights, options.pooling, options.cache_dir, options.seed or 0)
    content_layers, style_layers, layer_weights = layer_plan(net, options)
    net = net.truncated(content_layers + style_layers).to(device)
    from .targets import TargetSource  # imported here: engine.targets builds on this module
    from .tiling import Tiler  # likewise

    source = TargetSource(net, options, styles, blend, device, autocast)
    tiler = Tiler(net, source, layer_weights, autocast, extra_losses)

    height, width = output_shape(content, options)
    sizes = scale_sizes(height, width, options)
    reporter = Reporter(sum(tiler.iterations(h, w) for h, w in sizes), progress, cancel)
    reporter.check_cancel()
    rgb = content[..., :3]
    result: torch.Tensor | None = None
    for index, (h, w) in enumerate(sizes):
        reporter.stage = f"scale {index + 1}/{len(sizes)} ({w}x{h})" if len(sizes) > 1 else f"{w}x{h}"
        content_t = to_tensor(resize(rgb, h, w), device)
        if result is None:
            start = _initial_image(content_t, options, init_image, h, w, device)
        else:
            start = torch.nn.functional.interpolate(result, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        try:
            result = tiler.optimize(start, content_t, reporter)
        except RuntimeError as exc:
            raise _runtime_error(exc, h, w) from None
    out = to_array(result)
    if options.preserve_colors:
        out = preserve_colors(out, resize(rgb, height, width))
    if content.shape[2] == 4:
        out = np.concatenate([out, resize(content[..., 3:], height, width)], axis=2)
    return out


def _style_at(style: np.ndarray, height: int, width: int, scale: float) -> np.ndarray:
    """The style image resized so its longest side is `scale` x the output's longest side."""
    sh, sw = style.shape[:2]
    factor = scale * max(height, width) / max(sh, sw)
    return resize(style[..., :3], max(16, round(sh * factor)), max(16, round(sw * factor)))


def _initial_image(content_t, options, init_image, h, w, device) -> torch.Tensor:
    if init_image is not None:
        return to_tensor(resize(_check_image("initial image", init_image)[..., :3], h, w), device)
    if options.init == "image":
        return to_tensor(resize(read_image(options.init_image)[..., :3], h, w), device)
    if options.init == "noise":
        gen = torch.Generator().manual_seed(options.seed or 0)
        return torch.rand(content_t.shape, generator=gen).to(device)
    return content_t.clone()


def _autocast_factory(device: torch.device, precision: str):
    if precision == "fp32":
        return lambda: torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        raise EngineError("fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return lambda: torch.autocast(device.type, dtype=dtype)


def _runtime_error(exc: RuntimeError, h: int, w: int) -> Exception:
    message = str(exc)
    if "out of memory" in message.lower() or isinstance(exc, torch.OutOfMemoryError):
        return EngineError(f"out of memory at {w}x{h}; use a smaller size, tiling or the CPU")
    if "Output size is too small" in message or "smaller than kernel" in message.lower():
        return EngineError(f"image too small for this model at {w}x{h}; use a larger size")
    return exc
