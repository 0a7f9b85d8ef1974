"""All settings of one stylization run, validated once and passed down whole.

Every layer (CLI, worker, Blender add-on) builds one `StyleOptions`; nothing
below the public API reads loose keyword arguments.  `from_dict`/`to_dict`
let the worker protocol carry options as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import EngineError

MODELS = ("vgg19", "vgg16", "nin")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "image")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
POOLINGS = ("max", "avg")
# Largest output side accepted (8K UHD is 7680 x 4320).
MAX_SIDE = 8192


class JsonOptions:
    """replace/to_dict/from_dict shared by the frozen option dataclasses, which the worker carries as JSON."""

    _label = "option"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EngineError(f"unknown {cls._label}(s): {', '.join(unknown)}")
        return cls(**cls._from_json(dict(data)))

    @classmethod
    def _from_json(cls, values: dict) -> dict:
        """Turn JSON lists back into the tuples a field expects."""
        return values


@dataclass(frozen=True)
class StyleOptions(JsonOptions):
    """What to compute. `None` layer/weight fields mean "the model's defaults"."""

    model: str = "vgg16"
    # "packaged" (offline VGG-16), "download" (torchvision VGG-19/16 or nin_imagenet.pth),
    # "random" (tests/benchmarks only) or a .pth/.onnx path; see engine/weights.py.
    weights: str = "packaged"
    pooling: str = "max"
    content_layers: tuple[str, ...] | None = None
    style_layers: tuple[str, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 1e-3
    optimizer: str = "lbfgs"
    iterations: int = 200
    # None = the optimizer's own default (L-BFGS 1.0, Adam 0.02 in [0, 1] pixel units).
    learning_rate: float | None = None
    init: str = "content"
    init_image: str | None = None
    seed: int | None = None
    # Output longest side in pixels; None keeps the content image's size.
    size: int | None = None
    style_blend_weights: tuple[float, ...] | None = None
    # Style image longest side relative to the output's longest side.
    style_scale: float = 1.0
    preserve_colors: bool = False
    # Coarse-to-fine: number of scales; None picks by size (1 for small outputs).
    scales: int | None = None
    # Smallest side length of the first scale in coarse-to-fine runs.
    min_scale_size: int = 256
    device: str = "auto"
    precision: str = "fp32"
    # Tiling: tile side in pixels, 0 = choose from free memory, -1 = never tile.
    tile_size: int = 0
    tile_overlap: int = 64
    # Tiled scales: passes over a shifted grid (each tile gets iterations / passes steps per pass).
    tile_passes: int = 2
    # Cap on the memory tile sizes are planned for, in MiB; 0 = a share of what is free.
    memory_limit_mb: int = 0
    # Where downloaded/converted weights and style-target caches live; None = default cache.
    cache_dir: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if self.iterations < 1:
            raise EngineError(f"iterations must be at least 1, got {self.iterations}")
        if self.size is not None and not 16 <= self.size <= MAX_SIDE:
            raise EngineError(f"size must be between 16 and {MAX_SIDE} pixels, got {self.size}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise EngineError(f"{name} must not be negative")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise EngineError("learning_rate must be positive")
        if not 0.05 <= self.style_scale <= 4.0:
            raise EngineError(f"style_scale must be between 0.05 and 4, got {self.style_scale}")
        if self.init == "image" and not self.init_image:
            raise EngineError("init='image' needs init_image")
        if self.scales is not None and self.scales < 1:
            raise EngineError("scales must be at least 1")
        if self.tile_size not in (-1, 0) and self.tile_size < 64:
            raise EngineError(f"tile_size must be -1 (never tile), 0 (by free memory) or at least 64, got {self.tile_size}")
        if self.tile_overlap < 0 or self.tile_passes < 1 or self.memory_limit_mb < 0:
            raise EngineError("tile_overlap and memory_limit_mb must not be negative and tile_passes must be at least 1")
        if self.style_layer_weights is not None and self.style_layers is not None:
            if len(self.style_layer_weights) != len(self.style_layers):
                raise EngineError("style_layer_weights needs one weight per style layer")
        if self.style_blend_weights is not None and any(w < 0 for w in self.style_blend_weights):
            raise EngineError("style blend weights must not be negative")

    @classmethod
    def _from_json(cls, values: dict) -> dict:
        for name in ("content_layers", "style_layers", "style_layer_weights", "style_blend_weights"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return values


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EngineError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
