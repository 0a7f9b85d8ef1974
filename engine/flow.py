"""Optical flow between frames and backward warping.

One convention everywhere: a flow is an HxWx2 float32 array of (dx, dy) in
pixels, x to the right and y down (OpenCV's), and `flow[y, x]` says where the
pixel (x, y) of *this* frame lies in the *other* frame.  So warping the other
frame with it (`warp`) lines that frame up with this one.  How far a warped
frame can be trusted is engine.trust's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import EngineError


@dataclass(frozen=True)
class Motion:
    """How the current frame relates to the previous one.

    `to_prev` is the backward flow of the current frame; `mask` (HxW, 0-1) is
    how far the previous frame, warped with it, can be trusted per pixel
    (engine.trust.trust_mask: 1 keep, 0 re-stylize).
    """

    to_prev: np.ndarray
    mask: np.ndarray

    def resized(self, height: int, width: int) -> "Motion":
        """The same motion at another resolution (flow vectors scaled with it, the mask averaged)."""
        if self.mask.shape == (height, width):
            return self
        mask = cv2.resize(self.mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return Motion(resize_flow(self.to_prev, height, width), np.clip(mask, 0, 1))


def flows_from_images(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(current's backward flow, previous's forward flow) estimated from two content frames with DIS."""
    return estimate_flow(current, previous), estimate_flow(previous, current)


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
    map_x, map_y = sample_points(flow)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of this frame samples the other frame: (x + dx, y + dy) as two HxW maps."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def resize_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample a flow field to (height, width), scaling its vectors by the same factors."""
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    scaled = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    return scaled * np.array([width / w, height / h], np.float32)
