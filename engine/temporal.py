"""Temporal coherence for animations: keep what still holds, re-stylize what changed.

After Ruder et al. 2016 (short-term constraint), with a trust mask built for
renders (engine.trust): each frame starts from the previous stylized frame
warped along the motion (Blender's Vector pass, or DIS optical flow) where the
mask trusts it and from its own content where it does not, and a temporal loss
pulls trusted pixels towards the warped frame.  The mask distrusts what the
motion cannot explain: disocclusions (flow consistency, depth) and changed
shading (a photometric check), so moving shadows move and nothing leaves a
ghost.  An optional blend mixes the warped previous frame into trusted pixels
afterwards; the same blend (`blend_previous`) serves fast mode, which has no
optimisation.  benchmarks/bench_temporal.py measures the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import exr, hdr
from .errors import EngineError
from .flow import Motion, flows_from_images, warp
from .images import read_image, resize, write_image
from .optimize import ExtraLoss
from .options import JsonOptions, StyleOptions
from .pipeline import output_shape, stylize
from .progress import CancelFn, Progress, ProgressFn
from .regions import Region, check_shot, for_frame, keep_content, keep_mask
from .tensors import to_tensor
from .trust import COLOUR_TOLERANCE, FEATHER, trust_mask

FLOWS = ("auto", "vectors", "opencv")


@dataclass(frozen=True)
class TemporalOptions(JsonOptions):
    """How strongly consecutive frames are tied together, and what counts as unchanged.

    The temporal loss is `weight` x the style weight x the trust-weighted mean
    squared difference to the warped previous frame (pixel values in [0, 1]):
    relative to the style weight, because the style term is what makes
    independent frames drift apart, so one default serves every style strength.
    `flow`: "vectors" needs Blender's Vector pass, "opencv" estimates flow from
    the frames, "auto" uses vectors when a frame has them.  `blend` in [0, 1]
    mixes the warped previous frame into trusted pixels of the result (0 = off).
    `tolerance`: the CIELAB colour difference between the warped previous
    content and the current content beyond which a pixel is re-stylized (0 =
    no photometric check); `feather`: pixels over which trust fades near
    re-stylized regions (engine.trust).
    """

    _label = "temporal option"

    enabled: bool = True
    weight: float = 20.0
    flow: str = "auto"
    blend: float = 0.0
    tolerance: float = COLOUR_TOLERANCE
    feather: float = FEATHER

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise EngineError(f"unknown flow {self.flow!r}; choose one of: {', '.join(FLOWS)}")
        if self.weight < 0:
            raise EngineError("temporal weight must not be negative")
        if not 0 <= self.blend <= 1:
            raise EngineError(f"temporal blend must be between 0 and 1, got {self.blend}")
        if self.tolerance < 0:
            raise EngineError(f"temporal tolerance must not be negative, got {self.tolerance}")
        if self.feather < 0:
            raise EngineError(f"temporal feather must not be negative, got {self.feather}")



def _unchanged(result: np.ndarray) -> np.ndarray:
    return result


@dataclass(frozen=True)
class Frame:
    """One input frame: sRGB content in [0, 1] and, when rendered with them, Blender's motion vectors and depth.

    A high-dynamic-range frame's content is its display version (engine.hdr); `restore` gives a result made
    from it the frame's own range back, highlights above 1 included.
    """

    content: np.ndarray
    to_prev: np.ndarray | None = None
    to_next: np.ndarray | None = None
    depth: np.ndarray | None = None
    restore: Callable[[np.ndarray], np.ndarray] = _unchanged


def display_frame(path: str | Path) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A frame file's content for stylizing and the `restore` of its range (see `Frame`).

    Everything temporal (flow, trust, the warped previous result) works on the display version, so an HDR shot
    is coherent in the values the networks see.  EXR frames are scene-referred: all of them go through the
    tone curve, so a frame whose highlights stay below 1 matches its neighbours.
    """
    render = exr.read_render(path, hdr=True) if exr.is_multilayer(path) else None
    content = render.image if render is not None else read_image(path, hdr=True)
    return hdr.to_display(content, always=Path(path).suffix.lower() == ".exr")


def read_frame(path: str | Path, vectors: str | Path | None = None) -> Frame:
    """A frame from an image file; a Blender multilayer EXR (the frame itself or `vectors`) adds its motion."""
    content, restore = display_frame(path)
    render = exr.read_render(path) if vectors is None and exr.is_multilayer(path) else None
    if render is None:
        return dataclasses.replace(frame_with_vectors(content, vectors), restore=restore)
    return Frame(content, render.to_prev, render.to_next, render.depth, restore)


def frame_with_vectors(content: np.ndarray, vectors: str | Path | None) -> Frame:
    """A frame from pixels and, when given, the multilayer EXR whose Vector (and Depth) pass describes it."""
    if vectors is None:
        return Frame(content)
    render = exr.read_render(vectors)
    if render.to_prev is None:
        raise EngineError(f"{vectors} has no Vector pass; render it as a multilayer EXR with the Vector pass on")
    if render.to_prev.shape[:2] != content.shape[:2]:
        raise EngineError(f"the motion vectors in {vectors} do not match the frame's size")
    return Frame(content, render.to_prev, render.to_next, render.depth)


def frame_motion(previous: Frame, current: Frame, temporal: TemporalOptions = TemporalOptions()) -> Motion:
    """How `current` moved from `previous` (Blender's vectors or optical flow, per `temporal.flow`)
    and how far the warped previous frame can be trusted (engine.trust, from everything the frames hold)."""
    has_vectors = current.to_prev is not None and previous.to_next is not None
    if temporal.flow == "vectors" and not has_vectors:
        raise EngineError("flow 'vectors' needs Blender's Vector pass in this frame and the previous one")
    if has_vectors and temporal.flow != "opencv":
        to_prev, prev_to_next = current.to_prev.astype(np.float32), previous.to_next
    else:
        to_prev, prev_to_next = flows_from_images(previous.content, current.content)
    mask = trust_mask(
        to_prev, prev_to_next, content=current.content, previous_content=previous.content,
        depth=current.depth, previous_depth=previous.depth, tolerance=temporal.tolerance, feather=temporal.feather,
    )
    return Motion(to_prev, mask)


def linked_motion(
    temporal: TemporalOptions,
    content: np.ndarray,
    vectors: str | Path | None = None,
    previous_content: np.ndarray | None = None,
    previous_vectors: str | Path | None = None,
) -> Motion | None:
    """The motion tying `content` to the previous frame from whatever a caller kept of it.

    For the worker: `vectors`/`previous_vectors` are the frames' multilayer EXRs.
    With both, the photometric check compares the two EXRs' own Combined
    passes (like with like, whatever conversion `content` went through);
    otherwise the previous EXR's Combined pass stands in for a missing
    `previous_content`.
    None when temporal coherence is off or nothing of the previous frame is known.
    """
    if not temporal.enabled or (previous_content is None and previous_vectors is None):
        return None
    current = frame_with_vectors(content, vectors)
    if vectors is not None and previous_vectors is not None:
        return frame_motion(read_frame(previous_vectors), read_frame(vectors), temporal)
    before = read_frame(previous_vectors) if previous_vectors is not None else Frame(previous_content)
    if previous_content is not None:
        before = dataclasses.replace(before, content=previous_content)
    return frame_motion(before, current, temporal)


def temporal_loss(warped: np.ndarray, mask: np.ndarray, weight: float) -> ExtraLoss:
    """weight x mean(mask * (image - warped)^2) with the soft trust `mask`, at whatever scale the optimiser runs."""
    target = to_tensor(warped, torch.device("cpu"))
    trust = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def loss(image: torch.Tensor) -> torch.Tensor:
        key = (tuple(image.shape[-2:]), image.device)
        if key not in cache:
            size = image.shape[-2:]
            cache[key] = (
                torch.nn.functional.interpolate(target, size=size, mode="area").to(image.device),
                torch.nn.functional.interpolate(trust, size=size, mode="area").to(image.device),
            )
        goal, keep = cache[key]
        return weight * (keep * (image.float() - goal).pow(2)).mean()

    return loss


def warp_previous(previous: np.ndarray, motion: Motion, height: int, width: int) -> tuple[np.ndarray, Motion]:
    """The previous output's RGB lined up with the current frame at (height, width), and the motion at that size."""
    motion = motion.resized(height, width)
    rgb = resize(np.clip(previous[..., :3], 0, 1).astype(np.float32), height, width)
    return warp(rgb, motion.to_prev), motion


def blend_previous(current: np.ndarray, previous: np.ndarray, motion: Motion, amount: float) -> np.ndarray:
    """Mix the warped `previous` output into the trusted pixels of `current` (RGB only; alpha kept).

    Fast mode's temporal coherence: call it on each fast-mode output with the
    previous (blended) output and the frame's motion.
    """
    if amount <= 0:
        return current
    warped, motion = warp_previous(previous, motion, *current.shape[:2])
    return _mix(current, warped, motion.mask, amount)


def _mix(current: np.ndarray, warped: np.ndarray, mask: np.ndarray, amount: float) -> np.ndarray:
    if amount <= 0:
        return current
    share = (amount * mask)[..., None]
    out = current.copy()
    out[..., :3] = (1 - share) * current[..., :3] + share * warped
    return out


def stylize_frame(
    content: np.ndarray,
    styles: list[np.ndarray],
    options: StyleOptions,
    temporal: TemporalOptions,
    previous: np.ndarray | None = None,
    motion: Motion | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    regions: list[Region] | None = None,
) -> np.ndarray:
    """Stylize one frame, tied to the `previous` stylized frame by `motion` (see `frame_motion`).

    The optimisation starts from the warped previous frame where `motion.mask`
    trusts it and from the content where it does not (so nothing of the
    previous frame lingers where the picture changed), mixed by the mask.
    Without a previous frame or motion, or with temporal coherence off, this is
    plain `stylize`.
    """
    if not temporal.enabled or previous is None or motion is None:
        return stylize(content, styles, options, progress, cancel, regions=regions)
    height, width = output_shape(content, options)
    warped, motion = warp_previous(previous, motion, height, width)
    trust = motion.mask[..., None]
    start = trust * warped + (1 - trust) * resize(np.clip(content[..., :3], 0, 1).astype(np.float32), height, width)
    result = stylize(
        content, styles, options, progress, cancel,
        init_image=start,
        extra_losses=(temporal_loss(warped, motion.mask, temporal.weight * options.style_weight),),
        regions=regions,
    )
    result = _mix(result, warped, motion.mask, temporal.blend)
    if regions is not None:  # kept regions stay this frame's content, not the previous frame's warped output
        rgb = resize(np.clip(content[..., :3], 0, 1).astype(np.float32), height, width)
        result[..., :3] = keep_content(result[..., :3], rgb, keep_mask(regions, height, width))
    return result


def sequence_progress(progress: ProgressFn | None, index: int, count: int) -> ProgressFn | None:
    """Report frame `index` (0-based) of `count`'s iterations as part of the whole sequence."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        progress(dataclasses.replace(
            p, iteration=index * p.total + p.iteration, total=count * p.total, frame=index + 1, frames=count,
        ))

    return report


def shot_mattes(frames: list[Path], vectors: list[Path] | None, mattes: list[Path] | None) -> list[Path] | None:
    """Each frame's render with its Cryptomatte and Depth passes: `mattes` when given, else the motion-vector
    EXRs, else the frames themselves when they are Blender multilayer EXRs."""
    if mattes is not None:
        return list(mattes)
    if vectors is not None:
        return list(vectors)
    return list(frames) if frames and exr.is_multilayer(frames[0]) else None


def stylize_sequence(
    frames: list[Path],
    styles: list[np.ndarray],
    options: StyleOptions,
    temporal: TemporalOptions,
    out_dir: str | Path,
    vectors: list[Path] | None = None,
    suffix: str = ".png",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    regions: list[dict] | None = None,
    mattes: list[Path] | None = None,
    depth_scale: float = 1.0,
) -> list[Path]:
    """Stylize image files in order into out_dir/<frame stem><suffix>; returns the written paths.

    `vectors` optionally lists one Blender multilayer EXR per frame whose
    Vector pass describes that frame's motion.  `regions` (engine/regions.py's
    JSON form; a mask may be {"files": [one per frame]}) give parts of each
    frame their own styles, Cryptomatte masks and `depth_scale` bands coming
    from each frame's render (`shot_mattes`).  HDR frames keep their range
    (`Frame.restore`; write EXR to keep it on disk).  Each frame is written as
    soon as it is done, so a cancelled run keeps what it finished.
    """
    if vectors is not None and len(vectors) != len(frames):
        raise EngineError(f"{len(vectors)} motion-vector files for {len(frames)} frames; give one per frame")
    mattes = shot_mattes(frames, vectors, mattes)
    check_shot(regions, len(frames), mattes, depth_scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    before: tuple[Frame, np.ndarray] | None = None
    for index, path in enumerate(frames):
        frame = read_frame(path, vectors[index] if vectors else None)
        motion = frame_motion(before[0], frame, temporal) if before and temporal.enabled else None
        result = stylize_frame(
            frame.content, styles, options, temporal, before[1] if before else None, motion,
            sequence_progress(progress, index, len(frames)), cancel,
            for_frame(regions, *frame.content.shape[:2], len(styles), options,
                      mattes[index] if mattes else None, depth_scale, index),
        )
        written.append(write_image(out_dir / f"{Path(path).stem}{suffix}", frame.restore(result),
                                   protect=tuple(frames)))
        before = (frame, result)
    return written
