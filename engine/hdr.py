"""High dynamic range in, high dynamic range out.

Blender users stylize scene-linear renders, whose highlights go far above 1.0.
The networks see display images in [0, 1], so `to_display` compresses such an
image with a fixed, invertible tone curve, and the `restore` it returns gives
the stylized result back the brightness the curve took away: highlights come
back above 1 instead of being clipped.

The curve works per channel on the engine's sRGB-encoded values (extended sRGB
above 1, see `engine.images.linear_to_srgb(..., hdr=True)`): the identity up to
`KNEE`, then a Reinhard shoulder that approaches 1 and joins the identity with
the same slope:

    y = x                                  for x <= KNEE
    y = KNEE + S * u / (u + S),  u = x - KNEE, S = 1 - KNEE   above

with the inverse x = KNEE + S * t / (S - t), t = y - KNEE (`expand`).
`restore` multiplies each channel of the stylized result by the gain the curve
took from that pixel, x / y (1 below the knee), computed at the result's size:
a pixel the stylization left alone comes back exactly, and a highlight the
stylization darkened or recoloured keeps that change in proportion instead of
being blown out or lost.  The result is limited to the input's brightest value.
The curve does not depend on the image, so frames of a sequence get the same
one.  Images with nothing above 1 pass through unchanged, unless `always` says
the image is scene-referred whatever its values (a shot's EXR frames: a frame
whose highlights happen to stay below 1 then looks like its neighbours).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .images import resize

# sRGB-encoded value where the shoulder starts (linear light about 0.52).
KNEE = 0.75
_SHOULDER = 1.0 - KNEE


def is_hdr(image: np.ndarray) -> bool:
    """True for a float HxWxC array with a colour value above 1 (anything malformed is left to the
    caller's checks, and NaN compares false)."""
    image = np.asarray(image)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.floating):
        return False
    return bool(image[..., :3].max(initial=0.0) > 1.0)


def compress(x: np.ndarray) -> np.ndarray:
    """The tone curve: [0, inf) -> [0, 1), the identity up to KNEE."""
    over = np.maximum(x - KNEE, 0.0)
    return np.where(x > KNEE, KNEE + _SHOULDER * over / (over + _SHOULDER), x).astype(np.float32)


def expand(y: np.ndarray, peak: float) -> np.ndarray:
    """The inverse of `compress`, limited to `peak`."""
    t = np.clip(y - KNEE, 0.0, _SHOULDER)
    room = _SHOULDER - t
    inverse = np.divide(_SHOULDER * t, room, out=np.full_like(t, np.inf), where=room > 0)
    return np.where(y > KNEE, np.minimum(KNEE + inverse, peak), y).astype(np.float32)


def to_display(image: np.ndarray, always: bool = False) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(display image in [0, 1], restore): `restore(stylized)` brings back the dynamic range.

    `stylized` may have another size than `image` (the gain is taken from the
    display image resized to it).  Alpha passes through untouched.  For an image
    without values above 1 the display image is `image` itself and `restore`
    returns its argument, unless `always` (see the module text).
    """
    if not (is_hdr(image) or always):
        return image, lambda result: result
    image = np.asarray(image, dtype=np.float32)
    peak = max(float(image[..., :3].max(initial=0.0)), 1.0)
    display = np.concatenate([compress(image[..., :3]), image[..., 3:]], axis=2)

    def restore(result: np.ndarray) -> np.ndarray:
        result = np.asarray(result, dtype=np.float32)
        shown = resize(display[..., :3], *result.shape[:2])
        gain = np.divide(expand(shown, peak), shown, out=np.ones_like(shown), where=shown > KNEE)
        return np.concatenate([np.minimum(result[..., :3] * gain, peak), result[..., 3:]], axis=2)

    return display, restore
