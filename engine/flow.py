"""Optical flow between frames, backward warping and the occlusion mask.

One convention everywhere: a flow is an HxWx2 float32 array of (dx, dy) in
pixels, x to the right and y down (OpenCV's), and `flow[y, x]` says where the
pixel (x, y) of *this* frame lies in the *other* frame.  So warping the other
frame with it (`warp`) lines that frame up with this one.

Occlusion follows Ruder et al. 2016 (after Sundaram et al. 2010): a pixel is
trusted only where the backward flow and the forward flow carried back along it
cancel, it is not on a motion boundary, and it does not come from outside the
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import EngineError

# Sundaram et al.'s forward-backward tolerance: |w~ + w^|^2 > a (|w~|^2 + |w^|^2) + b.
CONSISTENCY_FACTOR = 0.01
CONSISTENCY_OFFSET = 0.5
# Motion-boundary test: |grad u|^2 + |grad v|^2 > a |w^|^2 + b.
BOUNDARY_FACTOR = 0.01
BOUNDARY_OFFSET = 0.002


@dataclass(frozen=True)
class Motion:
    """How the current frame relates to the previous one.

    `to_prev` is the backward flow of the current frame; `mask` is 1 where the
    previous frame, warped with it, can be trusted and 0 where it cannot
    (disoccluded, motion boundary, out of frame).
    """

    to_prev: np.ndarray
    mask: np.ndarray

    def resized(self, height: int, width: int) -> "Motion":
        """The same motion at another resolution (flow vectors scaled with it)."""
        if self.mask.shape == (height, width):
            return self
        return Motion(resize_flow(self.to_prev, height, width),
                      (cv2.resize(self.mask, (width, height), interpolation=cv2.INTER_AREA) > 0.999).astype(np.float32))


def motion_from_flows(to_prev: np.ndarray, prev_to_next: np.ndarray) -> Motion:
    """Motion from the current frame's backward flow and the previous frame's forward flow."""
    return Motion(to_prev.astype(np.float32), occlusion_mask(to_prev, prev_to_next))


def motion_from_images(previous: np.ndarray, current: np.ndarray) -> Motion:
    """Motion estimated from two content frames (HxWx3 sRGB) with DIS optical flow, both ways."""
    return motion_from_flows(estimate_flow(current, previous), estimate_flow(previous, current))


def estimate_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """DIS optical flow from `source` to `target`: source(x) ~ target(x + flow(x))."""
    if source.shape[:2] != target.shape[:2]:
        raise EngineError(
            f"frames differ in size ({source.shape[1]}x{source.shape[0]} vs {target.shape[1]}x{target.shape[0]}); "
            "optical flow needs a sequence of one size"
        )
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(source), _grey(target), None)


def _grey(image: np.ndarray) -> np.ndarray:
    rgb = np.clip(image[..., :3], 0, 1)
    return np.round(cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY) * 255).astype(np.uint8)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, edges repeated."""
    height, width = flow.shape[:2]
    if image.shape[:2] != (height, width):
        raise EngineError(f"cannot warp a {image.shape[1]}x{image.shape[0]} image with a {width}x{height} flow")
    map_x, map_y = _sample_points(flow)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def occlusion_mask(to_prev: np.ndarray, prev_to_next: np.ndarray) -> np.ndarray:
    """1 where the current frame's pixel is visible and trackable in the previous frame, else 0.

    `to_prev`: the current frame's backward flow; `prev_to_next`: the previous
    frame's forward flow.  Both HxWx2 in the module's convention.
    """
    if to_prev.shape != prev_to_next.shape or to_prev.ndim != 3 or to_prev.shape[2] != 2:
        raise EngineError(f"flows must both be HxWx2 of one size, got {to_prev.shape} and {prev_to_next.shape}")
    back = to_prev.astype(np.float32)
    forward = warp(prev_to_next, back)
    sq = lambda v: (v**2).sum(axis=2)  # noqa: E731 - squared length per pixel
    inconsistent = sq(forward + back) > CONSISTENCY_FACTOR * (sq(forward) + sq(back)) + CONSISTENCY_OFFSET
    du_y, du_x = np.gradient(back[..., 0])
    dv_y, dv_x = np.gradient(back[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > BOUNDARY_FACTOR * sq(back) + BOUNDARY_OFFSET
    map_x, map_y = _sample_points(back)
    height, width = back.shape[:2]
    outside = (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    return (~(inconsistent | boundary | outside)).astype(np.float32)


def resize_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample a flow field to (height, width), scaling its vectors by the same factors."""
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    scaled = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    return scaled * np.array([width / w, height / h], np.float32)
