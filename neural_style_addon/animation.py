"""Frame bookkeeping for "Stylize Animation": names, resuming, input frames, loading results.

The loop itself lives in `tasks.stylize_animation_steps`; everything it needs
to know about frames is here as plain functions.  Temporal coherence plugs in
at `FrameInput`: rendered frames also leave their motion vectors in
`<out_dir>/.motion/` (beside the output, so a resumed run still links its
first frame to the last one written), and frames read from a folder keep the
previous frame's pixels for optical flow.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

import bpy

from . import image_bridge, motion
from .errors import StyleError

IMAGE_EXTENSIONS = (".png", ".exr", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def frame_path(folder: str, frame: int) -> str:
    return os.path.join(folder, f"frame_{frame:04d}.png")


def motion_path(folder: str, frame: int) -> str:
    """The multilayer EXR holding a rendered frame's Vector pass."""
    return os.path.join(folder, ".motion", f"frame_{frame:04d}.exr")


def is_complete_png(path: str) -> bool:
    """A finished PNG starts with the signature and ends with the IEND chunk (cheap resume check)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return False
            fh.seek(-len(_PNG_END), os.SEEK_END)
            return fh.read() == _PNG_END
    except OSError:
        return False


def pending_frames(folder: str, frames: list[int]) -> list[int]:
    """The frames whose output is missing or damaged; the others are kept (resume)."""
    return [frame for frame in frames if not is_complete_png(frame_path(folder, frame))]


def sequence_files(folder: str) -> dict[int, str]:
    """Image files in `folder` by the frame number at the end of their name (`0001.png`, `shot_12.exr`)."""
    folder = bpy.path.abspath(folder)
    if not os.path.isdir(folder):
        raise StyleError(f"frames folder not found: {folder}")
    found = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        match = re.search(r"(\d+)$", stem)
        if match and ext.lower() in IMAGE_EXTENSIONS:
            found.setdefault(int(match.group(1)), os.path.join(folder, name))
    if not found:
        raise StyleError(f"no numbered image files in {folder}")
    return found


@dataclass
class FrameInput:
    """What one frame is stylized from.

    `previous_output` is the already stylized previous frame, when there is
    one; `vectors`/`previous_vectors` are the two frames' motion EXRs (rendered
    sources) and `previous_content` the previous frame's pixels (when known):
    what temporal coherence links the frames with.
    """

    frame: int
    content: object  # HxWx4 sRGB float32 array
    previous_output: str | None
    vectors: str | None = None
    previous_vectors: str | None = None
    previous_content: object = None


FrameReader = Callable[[int], object]


def render_reader(scene: bpy.types.Scene, workdir: str, motion_dir: str | None = None) -> FrameReader:
    """Frames made by rendering the scene at each frame; with `motion_dir`, each render's
    passes are also saved there (`motion_path`, needs `motion.enable_motion_passes`)."""

    def read(frame: int):
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)
        if motion_dir is not None:
            motion.save_motion_exr(scene, motion_path(motion_dir, frame))
        return image_bridge.read_render_result(scene, workdir)

    return read


def sequence_reader(folder: str) -> FrameReader:
    """Frames read from an existing rendered sequence."""
    files = sequence_files(folder)

    def read(frame: int):
        if frame not in files:
            raise StyleError(f"frame {frame} is missing from {folder}")
        return image_bridge.load_image_file(files[frame])

    return read


def frame_input(frame: int, read: FrameReader, out_dir: str, step: int = 1,
                previous_content=None, with_vectors: bool = False) -> FrameInput:
    """Read `frame`; `previous_content` is the previous frame's pixels when the caller kept them,
    `with_vectors` says `read` saves motion EXRs (see `render_reader`)."""
    previous = frame_path(out_dir, frame - step)
    content = read(frame)  # renders (and saves the vectors of) the frame first
    vectors = [motion_path(out_dir, f) for f in (frame, frame - step)] if with_vectors else []
    vectors = [path if os.path.isfile(path) else None for path in vectors] or [None, None]
    return FrameInput(frame, content, previous if is_complete_png(previous) else None, *vectors, previous_content)


def load_result(scene: bpy.types.Scene, out_dir: str, frames: list[int], add_strip: bool) -> bpy.types.Image:
    """Open the written frames as an image sequence, and optionally as a Video Sequencer strip."""
    first = frame_path(out_dir, frames[0])
    image = bpy.data.images.load(first, check_existing=False)
    image.source = "SEQUENCE"
    image.name = f"{scene.name} stylized"
    if add_strip:
        editor = scene.sequence_editor or scene.sequence_editor_create()
        channel = 1 + max((strip.channel for strip in editor.strips_all), default=0)
        strip = editor.strips.new_image(image.name, first, channel, frames[0])
        for frame in frames[1:]:
            strip.elements.append(os.path.basename(frame_path(out_dir, frame)))
    return image
