"""Feature networks: VGG-19, VGG-16 and NIN, defined here in the state-dict layouts
of the files people already have (torchvision's `features.N.*` for VGG, the common
`nin_imagenet.pth` for NIN), so those files load unchanged.

The PyPI torchvision wheel does not import against the CPU torch this project
uses, hence the small definitions here instead of `torchvision.models`.

A network takes RGB in [0, 1] and applies its weights' own input convention
(Caffe BGR/0-255/mean, or torchvision mean/std) inside `InputTransform`, so the
rest of the engine never thinks about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import EngineError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

_VGG_BLOCKS = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_VGG_WIDTHS = (64, 128, 256, 512, 512)


@dataclass(frozen=True)
class ModelSpec:
    """A network's layer names (one per `features` index) and its good default layers."""

    name: str
    layer_names: tuple[str, ...]
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    style_layer_weights: tuple[float, ...]


def _vgg_layer_names(blocks: tuple[int, ...]) -> tuple[str, ...]:
    names = []
    for b, count in enumerate(blocks, start=1):
        for c in range(1, count + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return tuple(names)


# NIN layer names follow the original neural-style (Torch) naming of nin_imagenet.
_NIN_NAMES = (
    "conv1", "relu0", "cccp1", "relu1", "cccp2", "relu2", "pool1",
    "conv2", "relu3", "cccp3", "relu5", "cccp4", "relu6", "pool2",
    "conv3", "relu7", "cccp5", "relu8", "cccp6", "relu9", "pool3",
    "drop", "conv4-1024", "relu10", "cccp7-1024", "relu11", "cccp8-1024", "relu12",
)


def _vgg_spec(name: str) -> ModelSpec:
    """VGG-19 and VGG-16 share Gatys et al.'s layers: content relu4_2, style reluN_1 of every block."""
    return ModelSpec(
        name, _vgg_layer_names(_VGG_BLOCKS[name]),
        content_layers=("relu4_2",),
        style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        style_layer_weights=(1.0, 1.0, 1.0, 1.0, 1.0),
    )


SPECS = {
    "vgg19": _vgg_spec("vgg19"),
    "vgg16": _vgg_spec("vgg16"),
    "nin": ModelSpec(
        "nin", _NIN_NAMES,
        content_layers=("relu7",),
        style_layers=("relu0", "relu3", "relu7", "relu12"),
        style_layer_weights=(1.0, 1.0, 1.0, 1.0),
    ),
}


def _pool(kind: str, kernel: int, stride: int, ceil: bool = False) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(kernel, stride, ceil_mode=ceil)
    return nn.MaxPool2d(kernel, stride, ceil_mode=ceil)


def _vgg_features(name: str, pooling: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for count, width in zip(_VGG_BLOCKS[name], _VGG_WIDTHS):
        for _ in range(count):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers.append(_pool(pooling, 2, 2))
    return nn.Sequential(*layers)


def _nin_features(pooling: str) -> nn.Sequential:
    def conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU()]

    return nn.Sequential(
        *conv(3, 96, 11, 4), *conv(96, 96, 1), *conv(96, 96, 1), _pool(pooling, 3, 2, ceil=True),
        *conv(96, 256, 5, 1, 2), *conv(256, 256, 1), *conv(256, 256, 1), _pool(pooling, 3, 2, ceil=True),
        *conv(256, 384, 3, 1, 1), *conv(384, 384, 1), *conv(384, 384, 1), _pool(pooling, 3, 2, ceil=True),
        nn.Dropout(0.5),
        *conv(384, 1024, 3, 1, 1), *conv(1024, 1024, 1), *conv(1024, 1000, 1),
    )


class InputTransform(nn.Module):
    """RGB [0, 1] -> the tensor the weights were trained on.

    "caffe": BGR, 0-255, minus the Caffe ImageNet mean (Caffe/Keras VGG, nin_imagenet).
    "torch": RGB, minus ImageNet mean, divided by std (torchvision).
    Buffers are not persistent, so they never appear in saved state dicts.
    """

    def __init__(self, convention: str):
        super().__init__()
        if convention not in ("caffe", "torch"):
            raise EngineError(f"unknown input convention {convention!r}")
        self.convention = convention
        if convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255.0  # RGB order, [0, 1] units
            scale = torch.full((3,), 255.0)
        else:
            mean = torch.tensor(IMAGENET_MEAN_RGB)
            scale = 1.0 / torch.tensor(IMAGENET_STD_RGB)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.scale
        return x.flip(1) if self.convention == "caffe" else x


class FeatureNet(nn.Module):
    """A feature network that runs only as deep as the deepest requested layer."""

    def __init__(self, model: str, pooling: str = "max", convention: str = "torch"):
        super().__init__()
        if model not in SPECS:
            raise EngineError(f"unknown model {model!r}; choose one of: {', '.join(SPECS)}")
        self.spec = SPECS[model]
        self.features = _nin_features(pooling) if model == "nin" else _vgg_features(model, pooling)
        self.prep = InputTransform(convention)
        assert len(self.features) == len(self.spec.layer_names)

    def layer_index(self, name: str) -> int:
        try:
            return self.spec.layer_names.index(name)
        except ValueError:
            raise EngineError(
                f"{self.spec.name} has no layer {name!r}; layers: {', '.join(self.spec.layer_names)}"
            ) from None

    def truncated(self, layers: tuple[str, ...]) -> "FeatureNet":
        """Drop the modules after the deepest of `layers`, so unused layers cost nothing."""
        depth = max(self.layer_index(name) for name in layers) + 1
        self.features = self.features[:depth]
        return self

    def set_padding(self, mode: str) -> "FeatureNet":
        """Pad every padded conv with "zeros" (the default) or "circular" (the image is a torus:
        seamless textures, engine/seamless.py).  Exact on a torus for VGG at sides divisible by its stride."""
        if mode not in ("zeros", "circular"):
            raise EngineError(f"unknown padding mode {mode!r}")
        for module in self.features:
            if isinstance(module, nn.Conv2d) and any(module.padding):
                module.padding_mode = mode
        return self

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        wanted = {self.layer_index(name): name for name in layers}
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.prep(x)
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out
