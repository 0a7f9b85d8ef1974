"""How far the previous frame, warped into the current one, can be trusted: a 0-1 weight per pixel.

Temporal coherence keeps the previous stylized frame wherever this weight is
high and re-stylizes the current frame wherever it is low, so it is built from
everything known about why the warped previous frame could be wrong:

- **Flow consistency** (Sundaram et al. 2010, the test Ruder et al. 2016 use):
  the backward flow and the forward flow carried back along it must cancel, the
  pixel must not lie on a motion boundary nor come from outside the frame.
  Catches disocclusions when both flows are known.
- **Photometric check**: the previous *content* frame warped with the same
  motion must look like the current content frame (CIELAB colour difference
  under a tolerance).  Motion vectors describe geometry only; a shadow moving
  over static ground, a highlight, an animated light or an appearing object
  change the picture where nothing moves, and this is what catches them.
- **Depth**: where a Depth pass exists, a pixel whose warped previous depth lies
  in front of its current depth was hidden in the previous frame (disoccluded).
- **Softness**: untrusted regions grow by `feather` pixels and their edge is
  blurred, so re-stylized regions blend into kept ones without a seam.

ReCoNet (Gao et al. 2018) instead asks the output to change as much as the
input's luminance does; that needs a trained network's consistent response to
brightness, which an optimisation from a warped start does not have, so here a
changed pixel is simply re-stylized.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import EngineError
from .flow import sample_points, warp

# Sundaram et al.'s forward-backward tolerance: |w~ + w^|^2 > a (|w~|^2 + |w^|^2) + b.
CONSISTENCY_FACTOR = 0.01
CONSISTENCY_OFFSET = 0.5
# Motion-boundary test: |grad u|^2 + |grad v|^2 > a |w^|^2 + b.
BOUNDARY_FACTOR = 0.01
BOUNDARY_OFFSET = 0.002
# CIELAB colour difference (Delta E 1976) at which a pixel stops being trusted; up to half of it, fully trusted.
# About 2.3 is a just noticeable difference; a shadow or a moved object edge is 20-80.
COLOUR_TOLERANCE = 10.0
# A pixel was hidden when its warped previous depth is in front of its depth by more than this fraction.
DEPTH_MARGIN = 0.05
# Pixels by which untrusted regions grow, and over which the weight ramps back up to 1.
FEATHER = 2.0
# Colour that transparent pixels are composited over before comparing (so alpha changes count as colour changes).
_BACKDROP = 0.5


def trust_mask(
    to_prev: np.ndarray,
    prev_to_next: np.ndarray | None = None,
    *,
    content: np.ndarray | None = None,
    previous_content: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    previous_depth: np.ndarray | None = None,
    tolerance: float = COLOUR_TOLERANCE,
    margin: float = DEPTH_MARGIN,
    feather: float = FEATHER,
) -> np.ndarray:
    """The HxW float32 weight (0 = re-stylize, 1 = keep the warped previous frame) from whatever is known.

    `to_prev` is the current frame's backward flow (engine.flow's convention).
    Each further pair adds its check: `prev_to_next` (the previous frame's
    forward flow) the flow consistency, `content`/`previous_content` (sRGB
    HxWx3/4) the photometric check, `depth`/`previous_depth` (HxW, distance
    from the camera) the depth check.  `tolerance` 0 switches the photometric
    check off, `feather` 0 the softening.
    """
    _check_flow("to_prev", to_prev)
    trust = inside_frame(to_prev)
    if prev_to_next is not None:
        trust = np.minimum(trust, consistency(to_prev, prev_to_next))
    if content is not None and previous_content is not None and tolerance > 0:
        trust = np.minimum(trust, photometric(previous_content, content, to_prev, tolerance))
    if depth is not None and previous_depth is not None:
        trust = np.minimum(trust, depth_visible(previous_depth, depth, to_prev, margin))
    return soften(trust, feather)


def inside_frame(to_prev: np.ndarray) -> np.ndarray:
    """1 where the pixel's position in the previous frame lies inside that frame, else 0."""
    map_x, map_y = sample_points(to_prev)
    height, width = to_prev.shape[:2]
    outside = (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    return (~outside).astype(np.float32)


def consistency(to_prev: np.ndarray, prev_to_next: np.ndarray) -> np.ndarray:
    """1 where the backward and forward flows agree and no motion boundary runs, else 0 (Sundaram et al.)."""
    _check_flow("to_prev", to_prev)
    _check_flow("prev_to_next", prev_to_next)
    if to_prev.shape != prev_to_next.shape:
        raise EngineError(f"flows must both be HxWx2 of one size, got {to_prev.shape} and {prev_to_next.shape}")
    back = to_prev.astype(np.float32)
    forward = warp(prev_to_next, back)
    sq = lambda v: (v**2).sum(axis=2)  # noqa: E731 - squared length per pixel
    inconsistent = sq(forward + back) > CONSISTENCY_FACTOR * (sq(forward) + sq(back)) + CONSISTENCY_OFFSET
    du_y, du_x = np.gradient(back[..., 0])
    dv_y, dv_x = np.gradient(back[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > BOUNDARY_FACTOR * sq(back) + BOUNDARY_OFFSET
    return (~(inconsistent | boundary)).astype(np.float32)


def colour_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-pixel CIELAB Delta E (1976) between two sRGB images (HxWx3, or HxWx4: composited over grey,
    plus 100 x the alpha difference)."""
    if first.shape[:2] != second.shape[:2]:
        raise EngineError(
            f"frames differ in size ({first.shape[1]}x{first.shape[0]} vs {second.shape[1]}x{second.shape[0]})"
        )
    lab = [cv2.cvtColor(_opaque(image), cv2.COLOR_RGB2Lab) for image in (first, second)]
    difference = np.sqrt(((lab[0] - lab[1]) ** 2).sum(axis=2))
    # A change of coverage counts like a change of lightness (full alpha = 100, black to white).
    return difference + 100 * np.abs(_alpha(first) - _alpha(second))


def photometric(previous_content: np.ndarray, content: np.ndarray, to_prev: np.ndarray,
                tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
    """1 where the warped previous content matches the current content, 0 beyond `tolerance` Delta E.

    The weight falls linearly from 1 at tolerance / 2 to 0 at `tolerance`.
    """
    _check_flow("to_prev", to_prev)
    if content.shape[:2] != to_prev.shape[:2] or previous_content.shape[:2] != to_prev.shape[:2]:
        raise EngineError("the content frames and the motion must have one size")
    warped = warp(previous_content, to_prev)
    difference = colour_difference(warped, content)
    return np.clip((tolerance - difference) / (tolerance / 2), 0, 1).astype(np.float32)


def depth_visible(previous_depth: np.ndarray, depth: np.ndarray, to_prev: np.ndarray,
                  margin: float = DEPTH_MARGIN) -> np.ndarray:
    """0 where the warped previous depth lies in front of the current depth by more than `margin` (relative).

    Such a pixel was covered by something nearer in the previous frame, so what
    the previous frame shows there is the occluder, not this surface.
    """
    _check_flow("to_prev", to_prev)
    for name, value in (("depth", depth), ("previous depth", previous_depth)):
        if value.shape != to_prev.shape[:2]:
            raise EngineError(f"the {name} must be HxW like the motion, got shape {value.shape}")
    # Blender writes a huge depth (1e10) for the empty background; keep the values finite for warping.
    before = np.nan_to_num(previous_depth.astype(np.float32), nan=np.float32(1e10), posinf=np.float32(1e10))
    now = np.nan_to_num(depth.astype(np.float32), nan=np.float32(1e10), posinf=np.float32(1e10))
    warped = warp(before, to_prev)
    return (warped >= now * (1 - margin)).astype(np.float32)


def soften(trust: np.ndarray, feather: float = FEATHER) -> np.ndarray:
    """Grow the untrusted regions by `feather` px and ramp the weight back up over about as many.

    A pixel never becomes more trusted than it was, so everything found
    untrusted stays so; trusted pixels near it get a smooth weight.
    """
    if feather <= 0:
        return trust.astype(np.float32)
    radius = math.ceil(feather)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    eroded = cv2.erode(trust.astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(eroded, (0, 0), feather / 2, borderType=cv2.BORDER_REPLICATE)
    return np.minimum(trust, blurred).astype(np.float32)


def _alpha(image: np.ndarray) -> np.ndarray:
    if image.shape[2] == 4:
        return np.clip(image[..., 3], 0, 1).astype(np.float32)
    return np.ones(image.shape[:2], np.float32)


def _opaque(image: np.ndarray) -> np.ndarray:
    rgb = np.clip(image[..., :3], 0, 1).astype(np.float32)
    alpha = _alpha(image)[..., None]
    return np.ascontiguousarray(rgb * alpha + _BACKDROP * (1 - alpha))


def _check_flow(name: str, flow: np.ndarray) -> None:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise EngineError(f"{name} must be an HxWx2 flow, got shape {flow.shape}")
