"""High dynamic range in, high dynamic range out.

Blender users stylize scene-linear renders, whose highlights go far above 1.0.
The networks see display images in [0, 1], so `to_display` compresses such an
image with a fixed, invertible tone curve, and the `restore` it returns applies
the exact inverse to the stylized result: highlights come back above 1 instead
of being clipped.

The curve works per channel on the engine's sRGB-encoded values (extended sRGB
above 1, see `engine.images.linear_to_srgb(..., hdr=True)`): the identity up to
`KNEE`, then a Reinhard shoulder that approaches 1 and joins the identity with
the same slope:

    y = x                                  for x <= KNEE
    y = KNEE + S * u / (u + S),  u = x - KNEE, S = 1 - KNEE   above

so its inverse is x = KNEE + S * t / (S - t), t = y - KNEE.  The curve does
not depend on the image (frames of a sequence get the same one); `restore`
limits the result to the input's brightest value, as a stylized pixel at
(almost) 1 would otherwise expand without bound.  Images with nothing above 1
pass through unchanged.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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


def to_display(image: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(display image in [0, 1], restore): `restore(stylized)` brings back the dynamic range.

    Alpha passes through untouched.  For an image without values above 1 the
    display image is `image` itself and `restore` returns its argument.
    """
    if not is_hdr(image):
        return image, lambda result: result
    image = np.asarray(image, dtype=np.float32)
    peak = float(image[..., :3].max())
    display = np.concatenate([compress(image[..., :3]), image[..., 3:]], axis=2)

    def restore(result: np.ndarray) -> np.ndarray:
        result = np.asarray(result, dtype=np.float32)
        return np.concatenate([expand(result[..., :3], peak), result[..., 3:]], axis=2)

    return display, restore
