"""Draw the bundled sample images (engine/samples/content.png, style.png).

The project ships its own samples so the README's main command needs no
downloads and no third-party artwork: a small landscape to stylize, and a
painterly image of swirling brush strokes to take the style from.
Deterministic: the same PNGs every run.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "engine" / "samples"


def content(width: int = 384, height: int = 256) -> Image.Image:
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([250, 210, 170])
    img = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse((280, 30, 330, 80), fill=(255, 236, 150))
    d.polygon([(0, 170), (90, 80), (170, 150), (250, 70), (384, 160), (384, 256), (0, 256)], fill=(92, 110, 140))
    d.polygon([(0, 190), (120, 140), (260, 185), (384, 150), (384, 256), (0, 256)], fill=(70, 130, 70))
    d.rectangle((0, 215, 384, 256), fill=(60, 110, 170))  # lake
    d.rectangle((60, 150, 140, 205), fill=(210, 190, 160))  # house
    d.polygon([(50, 150), (100, 115), (150, 150)], fill=(160, 60, 50))
    d.rectangle((90, 175, 108, 205), fill=(90, 60, 40))
    d.rectangle((66, 160, 84, 175), fill=(250, 240, 190))
    for x in (190, 215, 240, 330, 355):
        d.rectangle((x - 3, 180, x + 3, 210), fill=(80, 55, 35))
        d.ellipse((x - 15, 140, x + 15, 188), fill=(40, 100, 45))
    return img.filter(ImageFilter.SMOOTH)


def style(size: int = 256, strokes: int = 2600, seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    palette = np.array([[22, 40, 96], [40, 80, 160], [90, 140, 200], [240, 200, 70], [250, 235, 160], [30, 60, 50], [200, 120, 40]])
    img = Image.new("RGB", (size, size), (30, 50, 110))
    d = ImageDraw.Draw(img)
    for _ in range(strokes):
        x, y = rng.uniform(0, size, 2)
        # Swirling flow field: strokes follow circles around a few centres.
        angle = np.arctan2(y - size * 0.4, x - size * 0.55) + np.pi / 2 + 0.6 * np.sin(x / 23.0)
        length = rng.uniform(6, 16)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        colour = palette[rng.choice(len(palette), p=[0.2, 0.25, 0.2, 0.12, 0.08, 0.1, 0.05])]
        colour = tuple(int(c) for c in np.clip(colour + rng.normal(0, 18, 3), 0, 255))
        d.line((x - dx, y - dy, x + dx, y + dy), fill=colour, width=int(rng.integers(2, 5)))
    return img.filter(ImageFilter.SMOOTH_MORE)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    content().save(OUT / "content.png", optimize=True)
    style().save(OUT / "style.png", optimize=True)
    print(f"wrote {OUT / 'content.png'} and {OUT / 'style.png'}")
