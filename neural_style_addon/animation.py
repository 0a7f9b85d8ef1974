"""Frame bookkeeping for "Stylize Animation": names, resuming, input frames, loading results.

The loop itself lives in `tasks.stylize_animation_steps`; everything it needs
to know about frames is here as plain functions.  Temporal coherence plugs in
at `FrameInput`: rendered frames also leave their motion vectors in
`<out_dir>/.motion/` (beside the output, so a resumed run still links its
first frame to the last one written), and frames read from a folder keep the
previous frame's pixels for optical flow.  Frames are always rendered from the
3D scene (`scene_only`), and the result strip goes to a scene of its own
(`stylized_scene`), so it can neither replace the scene's render nor come back
as the next run's input.  Which frames a rerun keeps is decided with
`folder_record`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Callable

import bpy

from . import image_bridge, motion, os_rules
from .errors import StyleError

# The image files of a frames folder, in one order everywhere: the same suffixes and natural name order
# (frame_2 before frame_10) as engine/files.py.  A copy, not an import: Blender's process never imports the
# `engine` package (it belongs to the worker's interpreter, and putting a top-level `engine` on Blender's
# sys.path would be visible to every add-on); tests/test_addon_animation.py checks that the two agree.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp"})
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


def natural_key(name: str) -> list:
    """Sort key comparing runs of digits as numbers: "frame_2" < "frame_10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def image_files(folder: str) -> list[str]:
    """The image files of `folder` (hidden files skipped) in natural name order."""
    names = [name for name in os.listdir(folder)
             if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")]
    paths = [os.path.join(folder, name) for name in sorted(names, key=natural_key)]
    return [path for path in paths if os.path.isfile(path)]


def sequence_files(folder: str) -> dict[int, str]:
    """Image files in `folder` by the frame number at the end of their name (`0001.png`, `shot_12.exr`);
    of two files with the same number, the first in `image_files` order."""
    folder = bpy.path.abspath(folder)
    if not os.path.isdir(folder):
        raise StyleError(f"frames folder not found: {folder}")
    found = {}
    for path in image_files(folder):
        match = re.search(r"(\d+)$", os.path.splitext(os.path.basename(path))[0])
        if match:
            found.setdefault(int(match.group(1)), path)
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
        with scene_only(scene):
            bpy.ops.render.render(scene=scene.name)
        if motion_dir is not None:
            motion.save_motion_exr(scene, motion_path(motion_dir, frame))
        return image_bridge.read_render_result(scene, workdir)

    return read


@contextlib.contextmanager
def scene_only(scene: bpy.types.Scene):
    """Render the 3D scene, not its Video Sequencer: Blender renders the strips instead whenever the
    scene has any and *Sequencer* is on in the post-processing settings (restored afterwards)."""
    keep = scene.render.use_sequencer
    scene.render.use_sequencer = False
    try:
        yield
    finally:
        scene.render.use_sequencer = keep


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
    """Open the written frames as an image sequence, and optionally as a Video Sequencer strip
    (in the scene `stylized_scene` gives, never in `scene`); one image and one strip per folder, reused."""
    image = sequence_image(scene, frame_path(out_dir, frames[0]))
    if add_strip:
        sequence_strip(stylized_scene(scene), out_dir, frames)
    return image


def _same_file(a: str, b: str) -> bool:
    return os_rules.same_path(bpy.path.abspath(a), bpy.path.abspath(b))


def sequence_image(scene: bpy.types.Scene, first: str) -> bpy.types.Image:
    """The image sequence of `first`'s folder, starting at `first`: the one an earlier run loaded
    (pointed at `first` and reloaded, so it shows the new frames), or a new one."""
    for image in bpy.data.images:
        if image.source == "SEQUENCE" and _same_file(os.path.dirname(bpy.path.abspath(image.filepath)),
                                                     os.path.dirname(first)):
            if not _same_file(image.filepath, first):
                image.filepath = first
            image.reload()
            return image
    image = bpy.data.images.load(first, check_existing=False)
    image.source = "SEQUENCE"
    image.name = f"{scene.name} stylized"
    return image


def stylized_scene(scene: bpy.types.Scene) -> bpy.types.Scene:
    """The scene "<scene> Stylized" that holds the result strips, made on first use.

    The strips live there because Blender renders a scene's Video Sequencer
    instead of its 3D view whenever the scene has strips: in `scene` they
    would take over F12 and feed the stylized frames back into the next run.
    Its frame range, resolution and frame rate follow `scene`, so rendering it
    writes the stylized animation as a video or image sequence.
    """
    name = f"{scene.name} Stylized"
    target = bpy.data.scenes.get(name) or bpy.data.scenes.new(name)
    target.frame_start, target.frame_end = scene.frame_start, scene.frame_end
    for key in ("resolution_x", "resolution_y", "resolution_percentage", "fps", "fps_base"):
        setattr(target.render, key, getattr(scene.render, key))
    return target


def sequence_strip(scene: bpy.types.Scene, out_dir: str, frames: list[int]) -> bpy.types.Strip:
    """The image strip of `out_dir`'s frames in `scene`, replacing the one an earlier run made."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    first = frame_path(out_dir, frames[0])
    channel = 1 + max((strip.channel for strip in editor.strips_all), default=0)
    for strip in list(editor.strips):
        if strip.type == "IMAGE" and _same_file(strip.directory, out_dir):
            channel = strip.channel
            editor.strips.remove(strip)
    strip = editor.strips.new_image(os.path.basename(os.path.normpath(out_dir)), first, channel, frames[0])
    for frame in frames[1:]:
        strip.elements.append(os.path.basename(frame_path(out_dir, frame)))
    return strip
