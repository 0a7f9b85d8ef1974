"""Frame bookkeeping for "Stylize Animation": names, resuming, input frames, loading results.

The loop itself lives in `tasks.stylize_animation_steps`; everything it needs
to know about frames is here as plain functions, so the temporal-coherence
work can plug in at `FrameInput` (see `frame_input`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

import bpy

from . import image_bridge
from .errors import StyleError

IMAGE_EXTENSIONS = (".png", ".exr", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def frame_path(folder: str, frame: int) -> str:
    return os.path.join(folder, f"frame_{frame:04d}.png")


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
    one: the hook for temporal coherence (e.g. as the initial image).
    """

    frame: int
    content: object  # HxWx4 sRGB float32 array
    previous_output: str | None


FrameReader = Callable[[int], object]


def render_reader(scene: bpy.types.Scene, workdir: str) -> FrameReader:
    """Frames made by rendering the scene at each frame."""

    def read(frame: int):
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)
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


def frame_input(frame: int, read: FrameReader, out_dir: str, step: int = 1) -> FrameInput:
    previous = frame_path(out_dir, frame - step)
    return FrameInput(frame, read(frame), previous if is_complete_png(previous) else None)


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
