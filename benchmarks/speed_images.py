"""Two procedural content/style pairs for the speed benchmark, none of them used by the tests.

Content images are photo-like (smooth lighting, edges at several scales, texture);
style images are painterly (brush strokes; a stained-glass mosaic).  Everything is
drawn from a fixed seed, so every run sees the same pixels at any size.
"""

from __future__ import annotations

import cv2
import numpy as np


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1] with features about `scale` x the longer side."""
    small = rng.random((max(2, round(h * scale)), max(2, round(w * scale)))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    big -= big.min()
    return big / max(float(big.max()), 1e-6)


def landscape(h: int, w: int, seed: int = 1) -> np.ndarray:
    """Sky, sun, two ranges of hills, a lake and a few houses."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    img = np.zeros((h, w, 3), np.float32)
    sky = np.stack([0.35 + 0.4 * y, 0.55 + 0.3 * y, 0.95 - 0.1 * y], -1) * np.ones((1, w, 1), np.float32)
    img[:] = sky
    clouds = _smooth_noise(rng, h, w, 0.03)
    img += (np.clip(clouds - 0.55, 0, 1) * 1.5 * (1 - y))[..., None]
    sun = np.exp(-(((x - 0.72) ** 2 + (y - 0.22) ** 2) / 0.004))
    img += (sun[..., None] * np.array([1.0, 0.8, 0.4], np.float32)).astype(np.float32) * 0.9
    for base, amp, colour, seed_off in ((0.55, 0.12, (0.25, 0.35, 0.45), 1), (0.68, 0.08, (0.2, 0.45, 0.15), 2)):
        ridge = base - amp * _smooth_noise(np.random.default_rng(seed + seed_off), 1, w, 0.02)[0]
        mask = y > ridge[None, :]
        shade = 0.75 + 0.5 * _smooth_noise(np.random.default_rng(seed + 10 * seed_off), h, w, 0.08)
        img = np.where(mask[..., None], np.array(colour, np.float32) * shade[..., None], img)
    lake = (y > 0.8) & (np.abs(x - 0.35) < 0.25 + 0.1 * (y - 0.8))
    ripple = 0.9 + 0.1 * np.sin(y * h * 0.9 + 3 * _smooth_noise(rng, h, w, 0.05))
    img = np.where(lake[..., None], (np.flipud(sky) * 0.8 * ripple[..., None]), img)
    for i in range(4):
        cx, cy = 0.62 + 0.08 * i, 0.74 + 0.02 * (i % 2)
        x0, x1, y0, y1 = int((cx - 0.025) * w), int((cx + 0.025) * w), int(cy * h), int((cy + 0.06) * h)
        img[y0:y1, x0:x1] = np.array([0.85, 0.8, 0.7], np.float32) * (0.8 + 0.05 * i)
        roof = np.array([[x0 - w // 100, y0], [x1 + w // 100, y0], [(x0 + x1) // 2, y0 - (y1 - y0) // 2]], np.int32)
        cv2.fillPoly(img, [roof], (0.6, 0.15, 0.1))
        cv2.rectangle(img, (x0 + (x1 - x0) // 3, y0 + (y1 - y0) // 3), (x0 + 2 * (x1 - x0) // 3, y1),
                      (0.2, 0.15, 0.1), -1)
    grain = rng.normal(0, 0.015, (h, w, 1)).astype(np.float32)
    return np.clip(img + grain, 0, 1)


def still_life(h: int, w: int, seed: int = 2) -> np.ndarray:
    """A table with shaded spheres and a vase against a soft wall."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    wall = 0.55 + 0.25 * _smooth_noise(rng, h, w, 0.05)
    img = np.stack([wall * 0.9, wall * 0.85, wall * 0.7], -1)
    table = y > 0.62
    wood = 0.45 + 0.15 * np.sin(x * 60 + 8 * _smooth_noise(rng, h, w, 0.04)) * np.ones_like(y)
    img = np.where(table[..., None], np.stack([wood * 0.9, wood * 0.6, wood * 0.35], -1), img)
    aspect = w / h
    for cx, cy, r, colour in ((0.3, 0.58, 0.12, (0.85, 0.2, 0.15)), (0.52, 0.62, 0.08, (0.95, 0.75, 0.2)),
                              (0.7, 0.57, 0.13, (0.3, 0.55, 0.2))):
        dx, dy = (x - cx) * aspect, (y - cy)
        d = np.sqrt(dx**2 + dy**2) / r
        light = np.clip(1.0 - ((dx + 0.4 * r) ** 2 + (dy + 0.4 * r) ** 2) / (2 * r * r), 0.15, 1.0)
        sphere = (np.array(colour, np.float32)[None, None] * light[..., None])
        spec = np.exp(-((dx + 0.35 * r) ** 2 + (dy + 0.35 * r) ** 2) / (0.01 * r * r))[..., None]
        img = np.where((d < 1)[..., None], sphere + 0.6 * spec, img)
        shadow = (np.abs((x - cx - 0.05) * aspect) < r) & (np.abs(y - cy - r * 0.95) < 0.02)
        img = np.where(shadow[..., None], img * 0.6, img)
    vase_w = 0.05 + 0.03 * np.sin(np.clip((y - 0.25) / 0.37, 0, 1) * np.pi)
    vase = (np.abs(x - 0.5) < vase_w) & (y > 0.25) & (y < 0.62)
    stripe = 0.7 + 0.3 * np.sign(np.sin(y * 40))
    img = np.where(vase[..., None], np.array([0.2, 0.3, 0.7], np.float32) * stripe[..., None], img)
    grain = rng.normal(0, 0.015, (h, w, 1)).astype(np.float32)
    return np.clip(img + grain, 0, 1).astype(np.float32)


def brush_strokes(size: int, seed: int = 3) -> np.ndarray:
    """Thick oriented strokes in a warm/cold palette following a swirling flow field."""
    rng = np.random.default_rng(seed)
    palette = np.array([(0.95, 0.75, 0.2), (0.9, 0.4, 0.1), (0.15, 0.3, 0.7), (0.1, 0.15, 0.35),
                        (0.95, 0.9, 0.7), (0.3, 0.6, 0.8)], np.float32)
    img = np.full((size, size, 3), 0.2, np.float32)
    flow = _smooth_noise(rng, size, size, 0.02) * 2 * np.pi
    for _ in range(int(2.5 * size)):
        cx, cy = rng.integers(0, size, 2)
        angle = flow[cy, cx]
        length = rng.uniform(0.04, 0.1) * size
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        colour = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.1)
        cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), tuple(map(float, colour)),
                 max(2, size // 60), cv2.LINE_AA)
    return np.clip(cv2.GaussianBlur(img, (3, 3), 0), 0, 1)


def mosaic(size: int, seed: int = 4) -> np.ndarray:
    """Stained glass: Voronoi cells in saturated colours with dark leading."""
    rng = np.random.default_rng(seed)
    points = rng.random((max(30, size // 6), 2)) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist = np.stack([(xx - px) ** 2 + (yy - py) ** 2 for px, py in points])
    order = np.sort(dist, axis=0)
    nearest = np.argmin(dist, axis=0)
    colours = rng.random((len(points), 3)).astype(np.float32)
    colours = colours / colours.max(axis=1, keepdims=True)
    img = colours[nearest] * (0.8 + 0.2 * _smooth_noise(rng, size, size, 0.1))[..., None]
    edge = (np.sqrt(order[1]) - np.sqrt(order[0])) < max(1.5, size / 150)
    img[edge] = 0.05
    return np.clip(img, 0, 1).astype(np.float32)


PAIRS = {
    "landscape-strokes": (landscape, brush_strokes),
    "stilllife-mosaic": (still_life, mosaic),
}


def pair(name: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(content HxWx3, square style) for a pair; the style is drawn at the content's longest side."""
    content_fn, style_fn = PAIRS[name]
    return content_fn(height, width), style_fn(max(height, width))
