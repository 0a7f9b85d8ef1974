"""The one network set-up of a run: device, weights, layer plan, truncation.

Stylization, fast-mode training, ONNX export and the benchmarks all start
from `prepare_network`, so they agree on which weights, which layers and
which device a set of options means.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .networks import FeatureNet
from .options import StyleOptions
from .tensors import pick_device
from .weights import load_network


class LayerPlan(NamedTuple):
    """Which layers a run reads: content layers, style layers and each style layer's weight."""

    content: tuple[str, ...]
    style: tuple[str, ...]
    weights: dict[str, float]

    @property
    def layers(self) -> tuple[str, ...]:
        """Content and style layers, each once, content first."""
        return tuple(dict.fromkeys(self.content + self.style))


class Network(NamedTuple):
    net: FeatureNet
    plan: LayerPlan
    device: torch.device


def layer_plan(net: FeatureNet, options: StyleOptions) -> LayerPlan:
    """The options' layers, else the model's defaults; every name is checked against the network."""
    spec = net.spec
    content_layers = options.content_layers or spec.content_layers
    style_layers = options.style_layers or spec.style_layers
    weights = options.style_layer_weights or (
        spec.style_layer_weights if options.style_layers is None else (1.0,) * len(style_layers)
    )
    for name in content_layers + style_layers:
        net.layer_index(name)
    return LayerPlan(content_layers, style_layers, dict(zip(style_layers, weights)))


def prepare_network(options: StyleOptions, device: torch.device | None = None) -> Network:
    """The frozen feature network of `options`, truncated after its deepest planned layer, on `device`
    (default: `options.device`)."""
    device = device or pick_device(options.device)
    net = load_network(options.model, options.weights, options.pooling, options.cache_dir, options.seed or 0)
    plan = layer_plan(net, options)
    if options.seamless:  # the image is a torus
        net.set_padding("circular")
    return Network(net.truncated(plan.layers).to(device), plan, device)
