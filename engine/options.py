"""All settings of one stylization run, validated once and passed down whole.

Every layer (CLI, worker, Blender add-on) builds one `StyleOptions`; nothing
below the public API reads loose keyword arguments.  `from_dict`/`to_dict`
let the worker protocol carry options as JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass

from .errors import EngineError

MODELS = ("vgg19", "vgg16", "nin")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "image")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Number formats of the network's arithmetic; "auto" picks one per device (engine.tensors.resolve_precision).
NUMBER_FORMATS = ("fp32", "fp16", "bf16")
PRECISIONS = ("auto", *NUMBER_FORMATS)
POOLINGS = ("max", "avg")
# Largest output side accepted (8K UHD is 7680 x 4320).
MAX_SIDE = 8192
# Seeds seed torch and NumPy's generators, which take unsigned 64-bit values.
MAX_SEED = 2**63 - 1
# Default `StyleOptions.stop_change`: percent change of the picture's style statistics per 10 iterations below which
# its look counts as settled (calibrated in docs/benchmarks.md, "Time to quality and the convergence stop").
STOP_CHANGE = 1.0


class JsonOptions:
    """Shared by the frozen option dataclasses, which the worker carries as JSON.

    Every field's value is checked against its annotation before the class's
    own `__post_init__` runs (`check_fields`): a float field takes a finite
    int or float, an int field an int, a tuple field a tuple of such values,
    and so on, so NaN, infinity, strings for numbers or booleans for counts
    are refused the same way whether they come from the CLI, the worker or
    the Blender add-on.  Ranges stay with each class's `__post_init__`.
    """

    _label = "option"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None:
            return  # inherits a parent's checked __post_init__

        def __post_init__(self) -> None:
            check_fields(self)
            own(self)

        cls.__post_init__ = __post_init__

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise EngineError(f"{cls._label}s must be a JSON object of name: value, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EngineError(f"unknown {cls._label}(s): {', '.join(map(str, unknown))}")
        return cls(**cls._from_json(dict(data)))

    @classmethod
    def _from_json(cls, values: dict) -> dict:
        """Turn JSON lists back into the tuples a field expects (other values stay, to be refused)."""
        for name, kind in _field_kinds(cls).items():
            if kind[0] == "tuple" and isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return values


def check_fields(options) -> None:
    """Raise EngineError unless every field of the option dataclass `options` has its annotated type.

    Floats must be finite: NaN or infinity in a weight or rate would run to the
    end and produce a black image.
    """
    label = type(options)._label
    for name, (kind, item, optional) in _field_kinds(type(options)).items():
        value = getattr(options, name)
        if value is None and optional:
            continue
        if kind == "tuple":
            if not isinstance(value, tuple) or not value:
                raise EngineError(f"{label} {name} must be a non-empty list of {_NOUNS.get(item, item)}s, got {value!r}")
            for element in value:
                _check_value(label, name, item, element)
        else:
            _check_value(label, name, kind, value)


_NOUNS = {"float": "number", "int": "whole number", "str": "string", "bool": "true/false value", "dict": "mapping"}


def _check_value(label: str, name: str, kind: str, value) -> None:
    if kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise EngineError(f"{label} {name} must be a finite number, got {value!r}")
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        expected = {"str": str, "bool": bool, "dict": dict}.get(kind)
        ok = expected is None or isinstance(value, expected)  # other annotations: the class checks them
    if not ok:
        raise EngineError(f"{label} {name} must be a {_NOUNS[kind]}, got {value!r}")


@functools.lru_cache(maxsize=None)
def _field_kinds(cls) -> dict[str, tuple[str, str, bool]]:
    """name -> (kind, tuple item kind, None allowed) from a dataclass's annotations."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint, optional = hints[f.name], False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint, optional = args[0], True
        origin = typing.get_origin(hint)
        if origin is tuple:
            kinds[f.name] = ("tuple", typing.get_args(hint)[0].__name__, optional)
        else:
            kinds[f.name] = ((origin or hint).__name__, "", optional)
    return kinds


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
    # Most iterations per scale (per tile and pass when tiled).
    iterations: int = 200
    # Convergence stop: a scale (or tile) ends once the picture's look (the Gram matrices of its style layers)
    # changed by less than this many percent per 10 iterations, twice in a row (engine/optimize.py, `StopRule`);
    # `iterations` stays the upper bound.  0 runs every iteration.
    stop_change: float = STOP_CHANGE
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
    # "auto": bf16 on CPUs with bf16 arithmetic, fp32 elsewhere (engine.tensors.resolve_precision).
    precision: str = "auto"
    # Tiling: tile side in pixels, 0 = choose from free memory, -1 = never tile.
    tile_size: int = 0
    tile_overlap: int = 64
    # Tiled scales: passes over a shifted grid (each tile gets iterations / passes steps per pass).
    tile_passes: int = 2
    # Cap on the memory tile sizes are planned for, in MiB; 0 = a share of what is free.
    memory_limit_mb: int = 0
    # Where downloaded/converted weights and style-target caches live; None = default cache.
    cache_dir: str | None = None
    # The image is a torus: circular padding, wrap-around TV loss and resizing, so the result
    # tiles seamlessly (engine/seamless.py).  VGG models only; never tiled (docs/material-textures.md).
    seamless: bool = False

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if self.iterations < 1:
            raise EngineError(f"iterations must be at least 1, got {self.iterations}")
        if not 0 <= self.stop_change <= 100:
            raise EngineError(f"stop_change must be between 0 (off) and 100 percent, got {self.stop_change}")
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
        if not 16 <= self.min_scale_size <= MAX_SIDE:
            raise EngineError(f"min_scale_size must be between 16 and {MAX_SIDE} pixels, got {self.min_scale_size}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise EngineError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.tile_size not in (-1, 0) and self.tile_size < 64:
            raise EngineError(f"tile_size must be -1 (never tile), 0 (by free memory) or at least 64, got {self.tile_size}")
        if self.tile_overlap < 0 or self.tile_passes < 1 or self.memory_limit_mb < 0:
            raise EngineError("tile_overlap and memory_limit_mb must not be negative and tile_passes must be at least 1")
        if self.seamless and self.model == "nin":
            raise EngineError("seamless needs a VGG model: nin's first layer is unpadded, so it cannot wrap around")
        if self.seamless and self.tile_size > 0:
            raise EngineError("seamless runs are never tiled: use tile_size 0 or -1")
        if self.style_layer_weights is not None and self.style_layers is not None:
            if len(self.style_layer_weights) != len(self.style_layers):
                raise EngineError("style_layer_weights needs one weight per style layer")
        if self.style_layer_weights is not None and any(w < 0 for w in self.style_layer_weights):
            raise EngineError("style layer weights must not be negative")
        if self.style_blend_weights is not None:
            if any(w < 0 for w in self.style_blend_weights) or sum(self.style_blend_weights) <= 0:
                raise EngineError("style blend weights must not be negative and must not all be zero")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EngineError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
