"""Temporal coherence for animations (Ruder et al. 2016, short-term constraint).

Each frame starts from the previous stylized frame warped along the motion
(Blender's Vector pass, or DIS optical flow), and a temporal loss pulls it
towards that warped frame wherever the occlusion mask trusts the motion, so
static and tracked regions keep their strokes instead of flickering.  An
optional blend mixes the warped previous frame into the result afterwards; the
same blend (`blend_previous`) serves fast mode, which has no optimisation.

`flicker` measures the remaining frame-to-frame change over unoccluded pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import exr
from .errors import EngineError
from .flow import Motion, motion_from_flows, motion_from_images, warp
from .images import read_image, resize, write_image
from .options import JsonOptions
from .optimize import ExtraLoss, output_shape, stylize, to_tensor
from .options import StyleOptions
from .progress import CancelFn, Progress, ProgressFn

FLOWS = ("auto", "vectors", "opencv")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp")


@dataclass(frozen=True)
class TemporalOptions(JsonOptions):
    """How strongly consecutive frames are tied together.

    The temporal loss is `weight` x the style weight x the masked mean
    squared difference to the warped previous frame (pixel values in [0, 1]):
    relative to the style weight, because the style term is what makes
    independent frames drift apart, so one default serves every style strength.  `flow`: "vectors" needs Blender's Vector pass,
    "opencv" estimates flow from the frames, "auto" uses vectors when a frame
    has them.  `blend` in [0, 1] mixes the warped previous frame into trusted
    pixels of the result (0 = off).
    """

    _label = "temporal option"

    enabled: bool = True
    weight: float = 20.0
    flow: str = "auto"
    blend: float = 0.0

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise EngineError(f"unknown flow {self.flow!r}; choose one of: {', '.join(FLOWS)}")
        if self.weight < 0:
            raise EngineError("temporal weight must not be negative")
        if not 0 <= self.blend <= 1:
            raise EngineError(f"temporal blend must be between 0 and 1, got {self.blend}")



@dataclass(frozen=True)
class Frame:
    """One input frame: sRGB content and, when rendered with them, Blender's motion vectors."""

    content: np.ndarray
    to_prev: np.ndarray | None = None
    to_next: np.ndarray | None = None


def read_frame(path: str | Path, vectors: str | Path | None = None) -> Frame:
    """A frame from an image file; a Blender multilayer EXR (the frame itself or `vectors`) adds its motion."""
    render = exr.read_render(path) if exr.is_multilayer(path) else None
    content = render.image if render is not None else read_image(path)
    if vectors is not None or render is None:
        return frame_with_vectors(content, vectors)
    return Frame(content, render.to_prev, render.to_next)


def frame_with_vectors(content: np.ndarray, vectors: str | Path | None) -> Frame:
    """A frame from pixels and, when given, the multilayer EXR whose Vector pass describes its motion."""
    if vectors is None:
        return Frame(content)
    render = exr.read_render(vectors)
    if render.to_prev is None:
        raise EngineError(f"{vectors} has no Vector pass; render it as a multilayer EXR with the Vector pass on")
    if render.to_prev.shape[:2] != content.shape[:2]:
        raise EngineError(f"the motion vectors in {vectors} do not match the frame's size")
    return Frame(content, render.to_prev, render.to_next)


def frame_motion(previous: Frame, current: Frame, flow: str = "auto") -> Motion:
    """How `current` moved from `previous`: from Blender's vectors or from optical flow."""
    has_vectors = current.to_prev is not None and previous.to_next is not None
    if flow == "vectors" and not has_vectors:
        raise EngineError("flow 'vectors' needs Blender's Vector pass in this frame and the previous one")
    if has_vectors and flow != "opencv":
        return motion_from_flows(current.to_prev, previous.to_next)
    return motion_from_images(previous.content, current.content)


def linked_motion(
    temporal: TemporalOptions,
    content: np.ndarray,
    vectors: str | Path | None = None,
    previous_content: np.ndarray | None = None,
    previous_vectors: str | Path | None = None,
) -> Motion | None:
    """The motion tying `content` to the previous frame from whatever a caller kept of it.

    For the worker: `vectors`/`previous_vectors` are the frames' multilayer EXRs
    (the previous one's Combined pass stands in for `previous_content`).
    None when temporal coherence is off or nothing of the previous frame is known.
    """
    if not temporal.enabled or (previous_content is None and previous_vectors is None):
        return None
    before = read_frame(previous_vectors) if previous_vectors is not None else Frame(previous_content)
    if previous_content is not None:
        before = dataclasses.replace(before, content=previous_content)
    return frame_motion(before, frame_with_vectors(content, vectors), temporal.flow)


def temporal_loss(warped: np.ndarray, mask: np.ndarray, weight: float) -> ExtraLoss:
    """weight x mean(mask * (image - warped)^2), at whatever scale the optimiser runs."""
    target = to_tensor(warped, torch.device("cpu"))
    trust = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def loss(image: torch.Tensor) -> torch.Tensor:
        key = (tuple(image.shape[-2:]), image.device)
        if key not in cache:
            size = image.shape[-2:]
            cache[key] = (
                torch.nn.functional.interpolate(target, size=size, mode="area").to(image.device),
                (torch.nn.functional.interpolate(trust, size=size, mode="area") > 0.999).float().to(image.device),
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
) -> np.ndarray:
    """Stylize one frame, tied to the `previous` stylized frame by `motion` (see `frame_motion`).

    Without a previous frame or motion, or with temporal coherence off, this is
    plain `stylize`.
    """
    if not temporal.enabled or previous is None or motion is None:
        return stylize(content, styles, options, progress, cancel)
    warped, motion = warp_previous(previous, motion, *output_shape(content, options))
    result = stylize(
        content, styles, options, progress, cancel,
        init_image=warped,
        extra_losses=(temporal_loss(warped, motion.mask, temporal.weight * options.style_weight),),
    )
    return _mix(result, warped, motion.mask, temporal.blend)


def frame_flicker(current: np.ndarray, previous: np.ndarray, motion: Motion) -> float:
    """Mean absolute RGB difference between `current` and the warped `previous` over trusted pixels."""
    warped, motion = warp_previous(previous, motion, *current.shape[:2])
    trusted = motion.mask > 0
    if not trusted.any():
        return 0.0
    return float(np.abs(current[..., :3] - warped)[trusted].mean())


def flicker(frames: list[np.ndarray], motions: list[Motion]) -> float:
    """Mean `frame_flicker` over a sequence; `motions[i]` links frame i to frame i - 1 (`motions[0]` unused)."""
    if len(frames) < 2:
        raise EngineError("flicker needs at least two frames")
    return float(np.mean([frame_flicker(frames[i], frames[i - 1], motions[i]) for i in range(1, len(frames))]))


def sequence_progress(progress: ProgressFn | None, index: int, count: int) -> ProgressFn | None:
    """Report one frame's iterations as part of the whole sequence, staged "frame x of y"."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        stage = f"frame {index + 1} of {count}" + (f", {p.stage}" if p.stage else "")
        progress(dataclasses.replace(p, iteration=index * p.total + p.iteration, total=count * p.total, stage=stage))

    return report


def list_frames(folder: str | Path) -> list[Path]:
    """The image files of a folder in natural order (frame_2 before frame_10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"frames folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise EngineError(f"no image files in {folder}")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


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
) -> list[Path]:
    """Stylize image files in order into out_dir/<frame stem><suffix>; returns the written paths.

    `vectors` optionally lists one Blender multilayer EXR per frame whose
    Vector pass describes that frame's motion.  Each frame is written as soon
    as it is done, so a cancelled run keeps what it finished.
    """
    if vectors is not None and len(vectors) != len(frames):
        raise EngineError(f"{len(vectors)} motion-vector files for {len(frames)} frames; give one per frame")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    before: tuple[Frame, np.ndarray] | None = None
    for index, path in enumerate(frames):
        frame = read_frame(path, vectors[index] if vectors else None)
        motion = frame_motion(before[0], frame, temporal.flow) if before and temporal.enabled else None
        result = stylize_frame(
            frame.content, styles, options, temporal, before[1] if before else None, motion,
            sequence_progress(progress, index, len(frames)), cancel,
        )
        written.append(write_image(out_dir / f"{Path(path).stem}{suffix}", result, protect=tuple(frames)))
        before = (frame, result)
    return written


def _cmd_stylize_sequence(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli import options_from_args

    frames = list_frames(args.frames)
    vectors = list_frames(args.vectors) if args.vectors else None
    styles = [read_image(p) for p in args.style]
    options = options_from_args(args)
    temporal = TemporalOptions(
        enabled=args.flow != "none", weight=args.temporal_weight, flow="auto" if args.flow == "none" else args.flow,
        blend=args.blend,
    )
    bar = tqdm(total=None, unit="it", disable=args.quiet, dynamic_ncols=True)

    def progress(p: Progress) -> None:
        bar.total = p.total
        bar.set_description(p.stage)
        bar.update(p.iteration - bar.n)

    start = time.perf_counter()
    try:
        written = stylize_sequence(frames, styles, options, temporal, args.output, vectors, f".{args.format}", progress)
    finally:
        bar.close()
    if not args.quiet:
        print(f"wrote {len(written)} frames to {args.output} in {time.perf_counter() - start:.1f} s")
    return 0


def register(subparsers) -> None:
    from .cli import add_style_arguments

    d = TemporalOptions()
    p = subparsers.add_parser(
        "stylize-sequence", help="stylize an image sequence with temporal coherence",
        description="Stylize every image of FRAMES (a folder, natural name order) into OUTPUT, tying each frame "
                    "to the previous one along Blender's motion vectors or optical flow.",
    )
    p.add_argument("frames", help="folder of frames: images, or Blender multilayer EXRs with a Vector pass")
    p.add_argument("style", nargs="+", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--vectors", help="folder of multilayer EXRs with the Vector pass, one per frame, same order")
    p.add_argument("--flow", choices=(*FLOWS, "none"), default=d.flow,
                   help="motion source: auto (vectors when present, else OpenCV DIS), vectors, opencv, none (no temporal coherence)")
    p.add_argument("--temporal-weight", type=float, default=d.weight)
    p.add_argument("--blend", type=float, default=d.blend, help="mix of the warped previous frame into the result, 0-1")
    p.add_argument("--format", choices=("png", "tif", "exr", "jpg"), default="png")
    p.add_argument("--quiet", "-q", action="store_true")
    add_style_arguments(p)
    p.set_defaults(func=_cmd_stylize_sequence)
