"""Content targets and blended style Grams for a run, with each style's Grams cached on disk.

A style's Grams depend only on the pixels the network sees (the style image
resized for this scale), the network, its weights and the layers, so every
frame of an animation and every repeated run share them through a file keyed
by exactly those.  onnxruntime runs the exported feature network (parity with
torch is ~1e-6 relative, see tests/test_onnx_export.py); torch stays the
fallback where onnxruntime cannot serve the run's device (MPS, or a CUDA torch
beside a CPU-only onnxruntime), for reduced-precision content targets, when
onnxruntime fails, or when $NEURAL_STYLE_TARGETS=torch.

`blend_grams` is the one place several styles' Grams are mixed by their blend
weights; `style_at` the one place a style image is sized for an output; a
`StyleMix` names which styles, blend weights and style scale a target mixes
(the run's own, or one region's: engine/regions.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import losses, onnx_export
from .files import atomic_write
from .fingerprints import array_digest, data_digest, weights_key
from .images import resize
from .model import layer_plan
from .networks import FeatureNet
from .options import StyleOptions
from .tensors import Autocast, autocast_factory, resolve_precision, to_tensor
from .weights import cache_dir

log = logging.getLogger(__name__)

GRAMS_FOLDER = "style-grams"
ONNX_FOLDER = "onnx"
BACKEND_ENV = "NEURAL_STYLE_TARGETS"
# Bump when the Gram definition (engine.losses.gram) changes, so old cache files are not reused.
# 2: Grams are batched, 1xCxC per layer.
GRAM_VERSION = 2

Grams = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StyleMix:
    """Which of the run's style images a target mixes, by which blend weights, at which style scale."""

    indices: tuple[int, ...]
    blend: tuple[float, ...]
    scale: float


def style_size(style: np.ndarray, height: int, width: int, scale: float) -> tuple[int, int]:
    """Height and width of `style` resized so its longest side is `scale` x the output's longest side."""
    sh, sw = style.shape[:2]
    factor = scale * max(height, width) / max(sh, sw)
    return max(16, round(sh * factor)), max(16, round(sw * factor))


def style_at(style: np.ndarray, height: int, width: int, scale: float) -> np.ndarray:
    """The style image's RGB at `style_size`: what the network sees for an output of height x width."""
    return resize(style[..., :3], *style_size(style, height, width, scale))


def blend_grams(grams: Iterable[Grams], blend: Sequence[float]) -> Grams:
    """Several styles' Grams (one dict per style, in `blend` order) mixed by their blend weights."""
    total = sum(blend)
    blended: Grams = {}
    for per_style, weight in zip(grams, blend):
        for name, g in per_style.items():
            g = g * (weight / total)
            blended[name] = blended[name] + g if name in blended else g
    return blended


def style_grams(
    net: FeatureNet, styles: list[torch.Tensor], blend: Sequence[float], layers: tuple[str, ...], autocast: Autocast
) -> Grams:
    """Blend-weighted Gram matrices of style image tensors, per layer, computed by torch."""

    def grams_of(style: torch.Tensor) -> Grams:
        with torch.no_grad():
            with autocast():
                features = net(style, layers)
            return {name: losses.gram(features[name]) for name in layers}  # in fp32, outside autocast

    return blend_grams(map(grams_of, styles), blend)


def content_targets(net: FeatureNet, content: torch.Tensor, layers: tuple[str, ...], autocast: Autocast) -> Grams:
    with torch.no_grad(), autocast():
        feats = net(content, layers)
    return {name: feats[name].float() for name in layers}


class TargetSource:
    """Targets of one run: one network, one layer plan, a fixed list of style images."""

    def __init__(
        self,
        net: FeatureNet,
        options: StyleOptions,
        styles: list[np.ndarray],
        blend: list[float],
        device: torch.device,
        autocast: Autocast,
    ):
        self.net = net
        self.options = options
        self.styles = styles
        self.blend = blend
        self.device = device
        self.autocast = autocast
        self.content_layers, self.style_layers, _ = layer_plan(net, options)
        self.folder = cache_dir(options.cache_dir)
        self.network_key = {
            "model": options.model,
            "weights": weights_key(options.model, options.weights, options.seed),
            "pooling": options.pooling,
        }
        # Seamless targets use the torus padding; the ONNX export pads with zeros
        if options.seamless:
            self.network_key["padding"] = "circular"
        self.backend = "onnxruntime" if _onnx_serves(device) and not options.seamless else "torch"
        self._session = None

    def content(self, content: torch.Tensor) -> Grams:
        """Content features of `content` (1x3xHxW) at the content layers."""
        if resolve_precision(self.device, self.options.precision) == "fp32":
            features = self._onnx_features(content, self.content_layers)
            if features is not None:
                return features
        return content_targets(self.net, content, self.content_layers, self.autocast)

    @property
    def mix(self) -> StyleMix:
        """The run's own mix: every style image by the run's blend weights and style scale."""
        return StyleMix(tuple(range(len(self.styles))), tuple(self.blend), self.options.style_scale)

    def grams(self, height: int, width: int, mix: StyleMix | None = None) -> Grams:
        """Blended style Grams of `mix` (default: the run's) for an output of height x width."""
        mix = mix or self.mix
        sized = (self.style_grams(style_at(self.styles[i], height, width, mix.scale)) for i in mix.indices)
        return blend_grams(sized, mix.blend)

    def style_grams(self, style: np.ndarray) -> Grams:
        """Grams of one (already resized) style image: from the cache, else computed in fp32 and cached."""
        path = self.cache_path(style)
        cached = _read_grams(path, self.style_layers)
        if cached is None:
            style_t = to_tensor(style, self.device)
            features = self._onnx_features(style_t, self.style_layers)
            if features is None:
                fp32 = autocast_factory(self.device, "fp32")
                cached = style_grams(self.net, [style_t], [1.0], self.style_layers, fp32)
            else:
                cached = {name: losses.gram(f) for name, f in features.items()}
            _write_grams(path, {k: v.cpu() for k, v in cached.items()}, self._key(style))
        return {name: g.to(self.device) for name, g in cached.items()}

    def cache_path(self, style: np.ndarray) -> Path:
        return self.folder / GRAMS_FOLDER / f"{data_digest(self._key(style))[:32]}.npz"

    def _key(self, style: np.ndarray) -> dict:
        return {
            **self.network_key,
            "style": array_digest(style),
            "layers": list(self.style_layers),
            "gram": GRAM_VERSION,
        }

    def _onnx_features(self, image: torch.Tensor, layers: tuple[str, ...]) -> Grams | None:
        """Features from onnxruntime, or None where torch must compute them."""
        if self.backend != "onnxruntime" or os.environ.get(BACKEND_ENV) == "torch":
            return None
        names = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        try:
            if self._session is None:
                self._session = onnx_export.session(self._exported(names), self.options.device)
            outputs = onnx_export.run(self._session, image.detach().float().cpu().numpy())
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped; torch reports properly
            log.warning("onnxruntime feature extraction failed, using torch: %s", str(exc).splitlines()[0])
            self.backend = "torch"
            return None
        features = dict(zip(names, outputs))
        return {name: torch.from_numpy(features[name]).to(self.device) for name in layers}

    def _exported(self, layers: tuple[str, ...]) -> Path:
        """The run's feature network as ONNX, exported once per network and layer list."""
        key = {**self.network_key, "layers": list(layers), "opset": onnx_export.OPSET}
        path = self.folder / ONNX_FOLDER / f"{self.options.model}-{data_digest(key)[:16]}.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            onnx_export.export_features(self.net, layers, path)
        return path


def _onnx_serves(device: torch.device) -> bool:
    """onnxruntime computes targets only where its results land on the run's device cheaply."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and onnx_export.cuda_works()


def _read_grams(path: Path, layers: tuple[str, ...]) -> Grams | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: torch.from_numpy(data[name].copy()) for name in layers}
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable style cache file %s: %s", path, exc)
        return None


def _write_grams(path: Path, grams: Grams, key: dict) -> None:
    """Atomic write, so concurrent runs (several frames at once) never read half a file."""
    arrays = {name: g.numpy() for name, g in grams.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            np.savez(tmp, __key__=np.array(json.dumps(key, sort_keys=True)), **arrays)
    except OSError as exc:
        log.warning("cannot write style cache file %s: %s", path, exc)
