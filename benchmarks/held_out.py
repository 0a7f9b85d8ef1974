"""Held-out content/style pairs for time-to-quality measurements: made offline, none used by the tests.

Contents are real photographs that ship inside installed packages (no download):
Blender's studio-light HDRIs (bpy's datafiles, tone-mapped by the engine's own
curve, the middle of the panorama cropped to 3:2) and matplotlib's sample
portrait of Grace Hopper.  Styles are procedural paintings
(`benchmarks/speed_images.py`'s brush strokes and stained glass, and a pointillist
one here), drawn from fixed seeds.  `pair(name, longest)` gives both at a size.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from benchmarks.speed_images import brush_strokes, mosaic


def _bpy_studio_light(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("bpy (Blender as a module) is not installed: its studio lights are the contents")
    folder = Path(spec.origin).parent
    found = sorted(folder.glob(f"*/datafiles/studiolights/world/{name}.exr"))
    if not found:
        raise FileNotFoundError(f"no studio light {name}.exr under {folder}")
    return found[0]


def _matplotlib_sample(name: str) -> Path:
    import matplotlib

    return Path(os.path.dirname(matplotlib.__file__)) / "mpl-data" / "sample_data" / name


@lru_cache(maxsize=None)
def _panorama_crop(name: str) -> np.ndarray:
    """The middle of a studio-light panorama (2:1) at 3:2, tone-mapped to display sRGB (engine/hdr.py)."""
    from engine import hdr
    from engine.images import read_image

    image, _ = hdr.to_display(read_image(_bpy_studio_light(name), hdr=True))
    h, w = image.shape[:2]
    ch, cw = h // 2, (h // 2) * 3 // 2
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw, :3])


def panorama(name: str) -> np.ndarray:
    """A studio-light photograph by name (city, courtyard, forest, interior, night, studio, sunrise, sunset)."""
    return _panorama_crop(name)


@lru_cache(maxsize=None)
def _hopper() -> np.ndarray:
    from engine.images import read_image

    return read_image(_matplotlib_sample("grace_hopper.jpg"))[..., :3]


def pointillism(size: int, seed: int = 5) -> np.ndarray:
    """Dense round dots in a bright palette over a pale ground, larger and sparser towards one corner."""
    rng = np.random.default_rng(seed)
    palette = np.array([(0.9, 0.3, 0.3), (0.95, 0.8, 0.25), (0.25, 0.55, 0.85), (0.3, 0.7, 0.35),
                        (0.6, 0.35, 0.75), (0.95, 0.6, 0.2)], np.float32)
    img = np.full((size, size, 3), 0.92, np.float32)
    for _ in range(int(6 * size)):
        x, y = rng.integers(0, size, 2)
        radius = max(1, round((0.006 + 0.012 * (x + y) / (2 * size)) * size))
        colour = palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.05)
        cv2.circle(img, (int(x), int(y)), radius, tuple(map(float, colour)), -1, cv2.LINE_AA)
    return np.clip(img, 0, 1)


PAIRS = {
    "forest-strokes": (lambda: _panorama_crop("forest"), brush_strokes),
    "city-mosaic": (lambda: _panorama_crop("city"), mosaic),
    "hopper-points": (_hopper, pointillism),
}


def pair(name: str, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """(content with its longest side `longest`, square style drawn at `longest`)."""
    from engine.images import resize

    content_fn, style_fn = PAIRS[name]
    content = content_fn()
    h, w = content.shape[:2]
    factor = longest / max(h, w)
    return resize(content, max(16, round(h * factor)), max(16, round(w * factor))), style_fn(longest)
