"""Spatial control: different styles for different parts of the picture (Gatys et al. 2017, guided Grams).

A `Region` is a soft mask over the output (HxW, values in [0, 1]) with its own
style images (indices into the run's style list), blend weights, style scale
and strength.  The style loss of a region compares the Gram matrix of the
features *weighted by the mask*, downsampled to each layer's resolution, with
the Grams of the region's styles (`losses.guided_style_loss`); each region's
loss is weighted by its share of the picture, so every styled pixel pulls as
hard as in an unmasked run.  A region without styles is a "keep" region: it
adds no style loss and its pixels are mixed back to the content at the end,
so they stay as they were (only the content loss acts there while optimising).

Masks that overlap are shared: where they sum to more than 1, each is divided
by the sum.  `resolve` turns the JSON form the worker and the CLI carry (a
mask file, Cryptomatte names in a Blender render, or "rest") into regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import EngineError
from .images import MAX_INPUT_PIXELS, resize

# How far masks may sum above 1 from rounding before they are shared out.
OVERLAP_SLACK = 1e-3
# The mask spec that means "every pixel no other region covers".
REST = "rest"


@dataclass(frozen=True)
class Region:
    """One part of the output and how it is styled; `styles` empty: kept as the content."""

    mask: np.ndarray
    styles: tuple[int, ...] = ()
    blend: tuple[float, ...] | None = None
    style_scale: float | None = None
    weight: float = 1.0

    @property
    def keep(self) -> bool:
        return not self.styles


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """An HxW mask resized like an image (engine.images.resize, values kept in [0, 1])."""
    return resize(mask[..., None], height, width)[..., 0]


def check_regions(regions: list[Region], style_count: int, height: int, width: int) -> list[Region]:
    """The regions with masks at height x width, in [0, 1] and summing to at most 1; EngineError when unusable."""
    if not regions:
        raise EngineError("regions must list at least one region")
    checked = []
    for number, region in enumerate(regions, 1):
        what = f"region {number}"
        mask = np.asarray(region.mask)
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.ndim != 2 or min(mask.shape) < 1:
            raise EngineError(f"the mask of {what} must be an HxW array, got shape {mask.shape}")
        if not np.issubdtype(mask.dtype, np.number) or not np.isfinite(mask).all():
            raise EngineError(f"the mask of {what} must hold finite numbers")
        if mask.min() < -OVERLAP_SLACK or mask.max() > 1 + OVERLAP_SLACK:
            raise EngineError(f"the mask of {what} must lie in [0, 1], got {mask.min():.3g} to {mask.max():.3g}")
        mh, mw = mask.shape
        if abs(mh / mw - height / width) > 0.02 * height / width + 1 / min(mh, mw):
            raise EngineError(f"the mask of {what} is {mw}x{mh}, not the content's shape ({width}x{height})")
        bad = [i for i in region.styles if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < style_count]
        if bad:
            raise EngineError(f"{what} names style {bad[0]!r}, but the run has {style_count} style image(s)")
        if region.blend is not None and (
            len(region.blend) != len(region.styles) or min(region.blend, default=0) < 0 or sum(region.blend) <= 0
        ):
            raise EngineError(f"{what} needs one non-negative blend weight per style, not all zero")
        if region.style_scale is not None and not 0.05 <= region.style_scale <= 4.0:
            raise EngineError(f"the style scale of {what} must be between 0.05 and 4, got {region.style_scale}")
        if not (np.isfinite(region.weight) and region.weight >= 0):
            raise EngineError(f"the weight of {what} must be a finite number, at least 0")
        mask = resize_mask(np.clip(mask.astype(np.float32), 0, 1), height, width)
        checked.append(Region(mask, tuple(region.styles), region.blend, region.style_scale, float(region.weight)))
    total = sum(r.mask for r in checked)
    share = np.where(total > 1 + OVERLAP_SLACK, total, 1.0).astype(np.float32)
    return [Region(r.mask / share, r.styles, r.blend, r.style_scale, r.weight) for r in checked]


def keep_mask(regions: list[Region], height: int, width: int) -> np.ndarray | None:
    """HxW: how much of each pixel stays as the content (the keep regions, resized), or None without any."""
    kept = [r.mask for r in regions if r.keep]
    if not kept:
        return None
    return resize_mask(np.clip(sum(kept), 0, 1), height, width)


def keep_content(result: np.ndarray, content: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The result (HxWx3) with the keep regions' pixels mixed back to the content's."""
    if keep is None:
        return result
    share = keep[..., None]
    return (share * content + (1 - share) * result).astype(np.float32)


def depth_bands(depth: np.ndarray, bands: int = 4) -> list[tuple[np.ndarray, float]]:
    """Soft masks over the picture's depth (HxW distances, as Blender's Depth pass), nearest first, each with
    its place from 0 (near) to 1 (far): hat functions over log-distance between the 2nd and 98th percentile,
    so they sum to 1 everywhere; where nothing was hit (1e10) is the far end."""
    if bands < 2:
        raise EngineError(f"depth bands must be at least 2, got {bands}")
    hit = depth[np.isfinite(depth) & (depth > 0) & (depth < 1e9)]
    if hit.size == 0:
        return [(np.ones(depth.shape, np.float32), 0.0)]
    low, high = np.percentile(np.log(hit), [2, 98])
    safe = np.where(np.isfinite(depth) & (depth > 0), depth, 1e10).astype(np.float64)
    place = np.clip((np.log(safe) - low) / max(high - low, 1e-6), 0, 1)
    centres = np.linspace(0, 1, bands)
    return [(np.clip(1 - np.abs(place - c) * (bands - 1), 0, 1).astype(np.float32), float(c)) for c in centres]


def finer_with_distance(regions: list[Region] | None, style_count: int, depth: np.ndarray, far: float,
                        base_scale: float, blend: tuple[float, ...] | None = None, bands: int = 4) -> list[Region]:
    """Depth-aware style scale: every styled region (or, without regions, the whole picture with every style)
    split into depth bands whose style scale shrinks from the region's own at the nearest to `far` times it
    at the farthest (geometrically), so strokes get finer with distance as they would in perspective.
    `blend`: the styles' blend weights for the whole picture (without regions)."""
    if not 0.05 <= far <= 1:
        raise EngineError(f"the far style scale factor must be between 0.05 and 1, got {far}")
    if regions is None:
        regions = [Region(np.ones(depth.shape, np.float32), tuple(range(style_count)), blend)]
    split = []
    for region in regions:
        if region.keep:
            split.append(region)
            continue
        mask = resize_mask(np.asarray(region.mask, np.float32), *depth.shape)
        scale = region.style_scale or base_scale
        for band, place in depth_bands(depth, bands):
            split.append(Region(mask * band, region.styles, region.blend,
                                float(np.clip(scale * far ** place, 0.05, 4.0)), region.weight))
    return split


@dataclass
class Guide:
    """One styled region at one scale or tile: its style Grams and its mask (1x1xHxW on the run's device)."""

    grams: dict[str, torch.Tensor]
    mask: torch.Tensor
    weight: float
    _layer_masks: dict[tuple[int, int], tuple[torch.Tensor, float, torch.Tensor]] = field(
        default_factory=dict, repr=False)

    def at(self, height: int, width: int) -> tuple[torch.Tensor, float, torch.Tensor]:
        """(the mask averaged down to a layer's height x width, its mean, the sum of its squares), cached:
        the masks are fixed for a scale or tile, so the loss reads nothing back from the device per step."""
        key = (height, width)
        if key not in self._layer_masks:
            mask = torch.nn.functional.adaptive_avg_pool2d(self.mask, key)
            self._layer_masks[key] = (mask, float(mask.mean()), mask.pow(2).sum())
        return self._layer_masks[key]

    def crop(self, of) -> "Guide":
        """The guide for a tile: `of` cuts the tile out of a full-size tensor (a tiling `Box`)."""
        return Guide(self.grams, of(self.mask), self.weight)


def mask_tensor(mask: np.ndarray, height: int, width: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(resize_mask(mask, height, width)))[None, None].to(device)


# ---------------------------------------------------------------------------------------------------------------
# The JSON form: {"styles": [0, 1], "blend": [...], "style_scale": 0.5, "weight": 1.0, "mask": MASK}, where MASK is
# {"file": "a.npy" or an image}, {"object": [names]}, {"material": [names]} (Cryptomatte coverage in the `mattes`
# render) or "rest" (1 - the other regions' masks).  For a shot, MASK may also be {"files": [one per frame]}, and
# `mattes` is each frame's own render (`for_frame`).

REGION_FIELDS = ("styles", "blend", "style_scale", "weight", "mask")


def resolve(specs: list[dict], height: int, width: int, mattes: str | Path | None = None) -> list[Region]:
    """Regions from their JSON form, for a content of height x width; one sentence when a spec is unusable."""
    if not isinstance(specs, list) or not specs:
        raise EngineError("regions must be a non-empty list")
    masks: list[np.ndarray | None] = []
    passes = []  # the `mattes` render's Cryptomattes, read once for every region that needs them
    for number, spec in enumerate(specs, 1):
        if not isinstance(spec, dict):
            raise EngineError(f"region {number} must be an object with a mask and its styles")
        unknown = sorted(set(spec) - set(REGION_FIELDS))
        if unknown:
            raise EngineError(f"region {number} has unknown field(s): {', '.join(unknown)}")
        if "mask" not in spec:
            raise EngineError(f"region {number} needs a mask")
        masks.append(_mask_of(spec["mask"], number, height, width, mattes, passes))
    rests = [i for i, m in enumerate(masks) if m is None]
    if len(rests) > 1:
        raise EngineError("only one region can be the rest")
    if rests:
        covered = sum((m for m in masks if m is not None), np.zeros((height, width), np.float32))
        masks[rests[0]] = np.clip(1 - covered, 0, 1)
    regions = []
    for number, (spec, mask) in enumerate(zip(specs, masks), 1):
        styles = spec.get("styles") or []
        blend = spec.get("blend")
        if not isinstance(styles, list) or (blend is not None and not isinstance(blend, list)):
            raise EngineError(f"region {number}: styles and blend must be lists")
        for key in ("style_scale", "weight"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise EngineError(f"region {number}: {key} must be a number, got {value!r}")
        regions.append(Region(mask, tuple(styles), tuple(blend) if blend is not None else None,
                              spec.get("style_scale"), 1.0 if spec.get("weight") is None else spec["weight"]))
    return regions


def for_frame(specs: list[dict] | None, height: int, width: int, style_count: int, options, mattes=None,
              depth_scale: float = 1.0, index: int | None = None) -> list[Region] | None:
    """The regions of one image or of frame `index` of a shot: masks from files (a shot's {"files": [...]}: this
    frame's), Cryptomatte masks from `mattes` (this frame's render), and with `depth_scale` below 1 each region
    (or the whole picture) split by the Depth pass of `mattes` (`finer_with_distance`).  None: no regions."""
    regions = None
    if specs is not None:
        if index is not None:
            specs = [_this_frame(spec, index) for spec in specs]
        regions = resolve(specs, height, width, mattes=mattes)
    if depth_scale < 1:
        from .exr import read_render

        if mattes is None:
            raise EngineError("depth_scale needs the render's multilayer EXR (mattes) with its Depth pass")
        depth = read_render(mattes).depth
        if depth is None:
            raise EngineError(f"{mattes} has no Depth pass; render with the Z pass on")
        regions = finer_with_distance(regions, style_count, depth, depth_scale, options.style_scale,
                                      options.style_blend_weights)
    return regions


def _this_frame(spec, index: int):
    mask = spec.get("mask") if isinstance(spec, dict) else None
    if isinstance(mask, dict) and set(mask) == {"files"}:
        return {**spec, "mask": {"file": mask["files"][index]}}
    return spec


def check_shot(specs: list[dict] | None, frames: int, mattes: list | None, depth_scale: float = 1.0) -> None:
    """Before any frame of a shot is made: per-frame mask lists and renders that cover every frame, and renders
    wherever Cryptomatte masks or depth bands need them."""
    needs_renders = depth_scale < 1
    for number, spec in enumerate(specs or [], 1):
        mask = spec.get("mask") if isinstance(spec, dict) else None
        if isinstance(mask, dict) and set(mask) == {"files"}:
            if not isinstance(mask["files"], list) or len(mask["files"]) != frames:
                count = len(mask["files"]) if isinstance(mask["files"], list) else "no list of"
                raise EngineError(f"the mask of region {number} lists {count} files for {frames} frames; give one "
                                  "per frame")
        needs_renders |= isinstance(mask, dict) and bool(set(mask) & {"object", "material"})
    if needs_renders and mattes is None:
        raise EngineError("Cryptomatte masks and depth bands need each frame's multilayer EXR render (mattes)")
    if mattes is not None and len(mattes) != frames:
        raise EngineError(f"{len(mattes)} renders (mattes) for {frames} frames; give one per frame")


def mask_files(specs: list[dict] | None) -> list[str]:
    """Every mask file the specs name (what a shot's record fingerprints besides the specs themselves)."""
    found = []
    for spec in specs or []:
        mask = spec.get("mask") if isinstance(spec, dict) else None
        if isinstance(mask, dict):
            found += [mask["file"]] if "file" in mask else list(mask.get("files", []))
    return found


def _mask_of(spec, number: int, height: int, width: int, mattes, passes: list) -> np.ndarray | None:
    if spec == REST:
        return None
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, value), = spec.items()
        if kind == "file" and isinstance(value, str):
            return resize_mask(read_mask(value), height, width)
        if kind in ("object", "material") and isinstance(value, list) and all(isinstance(v, str) for v in value):
            if mattes is None:
                raise EngineError(f"region {number} takes its mask from Cryptomatte; give the render's EXR (mattes)")
            if not passes:
                from .exr import Cryptomattes

                passes.append(Cryptomattes(mattes))
            return resize_mask(passes[0].coverage(kind, value), height, width)
    raise EngineError(
        f"the mask of region {number} must be \"rest\", {{\"file\": path}}, {{\"object\": [names]}} or "
        f"{{\"material\": [names]}}, got {spec!r}"[:300]
    )


def read_mask(path: str | Path) -> np.ndarray:
    """A mask from a file: a 2-D `.npy` array, or an image (its alpha when it has one, else its luminance)."""
    from .images import read_image

    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r")  # the header first: nothing read yet
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot read the mask {path}: {exc}") from None
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2 or array.dtype.kind not in "fiu" or array.size > MAX_INPUT_PIXELS:
            raise EngineError(f"the mask {path} must be a 2-D array of numbers, got {array.dtype} {array.shape}")
        array = np.asarray(array, dtype=np.float32)
    else:
        image = read_image(path)
        array = image[..., 3] if image.shape[2] == 4 and image[..., 3].min() < 1 else image[..., :3] @ np.float32(
            [0.2126, 0.7152, 0.0722])
    if not np.isfinite(array).all() or array.min() < -OVERLAP_SLACK or array.max() > 1 + OVERLAP_SLACK:
        raise EngineError(f"the mask {path} must hold values from 0 to 1")
    return np.clip(array, 0, 1).astype(np.float32)
