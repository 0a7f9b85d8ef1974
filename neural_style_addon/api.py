"""Python API for scripts and render farms (works with `blender -b` and the `bpy` module).

    from neural_style_addon import api          # bl_ext.user_default.neural_style.neural_style_addon when installed
    image = api.stylize_image(["//styles/wave.jpg"], target="TEXTURE", obj=bpy.data.objects["Cube"])
    paths = api.stylize_animation(["//styles/wave.jpg"], "//stylized/")
    # one style on the hero, another everywhere else (masks from Cryptomatte, see mattes.py):
    image = api.stylize_image([("//ink.jpg", 1.0, bpy.data.objects["Hero"]), "//watercolour.jpg"])

Both run to completion and raise `StyleError` with a readable message.  The
panel's settings (`scene.neural_style`) provide every default, so a script
only passes what differs; `options` overrides any `engine.StyleOptions` field.
The operators build their jobs with the same functions.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Union

import bpy

from . import image_bridge, materials, mattes, os_rules, preferences, tasks
from .errors import StyleError
from .job import Job, Style
from .runner import Task
from .worker_client import shared_worker

# engine.StyleOptions' default style_weight, used at strength 1 (Blender's process cannot import the engine;
# tests/test_addon_render.py checks the two agree).
BASE_STYLE_WEIGHT = 10.0
StyleRef = Union[str, bpy.types.Image]


def load_style(ref: StyleRef, weight: float = 1.0, limit=None) -> Style:
    """A style from a path or an image; `limit`: an Object, Collection or Material it is limited to, or the
    (kind, names) `mattes.limit_of` gives."""
    if not isinstance(limit, (tuple, type(None))):
        limit = mattes.limit_of(limit)
    if isinstance(ref, bpy.types.Image):
        return Style(ref.name, image_bridge.image_to_array(ref), weight, limit)
    if not ref:
        raise StyleError("a style slot has no image: choose a file or an image")
    path = bpy.path.abspath(ref)
    if not os.path.isfile(path):
        raise StyleError(f"style image not found: {path}")
    return Style(bpy.path.display_name_from_filepath(path), image_bridge.load_image_file(path), weight, limit)


def load_styles(refs: Iterable[StyleRef | tuple]) -> list[Style]:
    """Style pixels from paths or images, each optionally as `(ref, weight)` or `(ref, weight, limit)`."""
    styles = [load_style(*(ref if isinstance(ref, tuple) else (ref,))) for ref in refs]
    if not styles:
        raise StyleError("add at least one style image")
    if sum(style.weight for style in styles) <= 0:
        raise StyleError("the style weights are all zero")
    return styles


def settings_styles(settings) -> list[tuple]:
    return [(item.image if item.kind == "IMAGE" else item.filepath, item.weight, mattes.slot_limit(item))
            for item in settings.styles]


def engine_options(settings, styles: list[Style], context=None) -> dict:
    """`engine.StyleOptions` fields (as JSON) from the panel's settings."""
    device = preferences.default_device(context) if settings.device == "DEFAULT" else settings.device
    options = {
        "model": settings.model,
        "weights": bpy.path.abspath(settings.weights) if settings.weights else ("packaged" if settings.model == "vgg16" else "download"),
        "iterations": settings.iterations,
        "size": settings.size or None,
        "optimizer": settings.optimizer,
        "style_weight": BASE_STYLE_WEIGHT * settings.strength,
        "style_scale": settings.style_scale,
        "preserve_colors": settings.preserve_colors,
        "device": device,
        "seed": settings.seed if settings.seed >= 0 else None,
    }
    if len(styles) > 1:
        options["style_blend_weights"] = [style.weight for style in styles]
    return options


def build_job(scene, styles=None, options=None, context=None, animation=False, **fields) -> Job:
    """A checked `Job` from the scene's settings, with `styles`, `options` and Job `fields` overriding them."""
    settings = scene.neural_style
    context = context or bpy.context
    loaded = load_styles(settings_styles(settings) if styles is None else styles)
    mode = fields.get("animation_mode", settings.animation_mode)
    job = Job(
        styles=loaded,
        options={**engine_options(settings, loaded, context), **(options or {})},
        source=settings.source, image=settings.source_image, sequence_dir=settings.sequence_dir,
        target=settings.target, filepath=settings.output_path, obj=context.view_layer.objects.active,
        preview_every=settings.preview_every,
        out_dir=bpy.path.abspath(settings.animation_dir),
        frames=list(range(scene.frame_start, scene.frame_end + 1, scene.frame_step)),
        load_sequence=settings.load_sequence, add_strip=settings.add_strip, existing_frames=settings.existing_frames,
        temporal={"enabled": settings.temporal, "weight": settings.temporal_weight,
                  "blend": settings.fast_blend if mode == "FAST" else settings.temporal_blend},
        animation_mode=mode, fast={"steps": settings.fast_steps},
        ray_address=preferences.ray_address(context), ray_token_file=preferences.ray_token_file(context),
        depth_scale=settings.depth_scale,
    )
    for name, value in fields.items():
        setattr(job, name, value)
    check_job(job, animation, scene)
    return job


def check_job(job: Job, animation: bool = False, scene=None) -> None:
    """Refuse, before any work, what would fail at the end or overwrite the user's data."""
    if job.source == "SEQUENCE" and not job.sequence_dir:
        raise StyleError("choose the folder of rendered frames")
    if job.existing_frames not in ("RESUME", "OVERWRITE"):
        raise StyleError(f"existing_frames must be 'RESUME' or 'OVERWRITE', not {job.existing_frames!r}")
    mattes.check_limits(job, animation)
    if animation:
        if job.source in ("IMAGE", "MATERIAL"):
            raise StyleError("an animation is stylized from renders or a frames folder, not a single image "
                             "or a material's textures")
        if not os.path.isabs(job.out_dir):  # a "//" path in an unsaved file
            raise StyleError("save the .blend file first, or choose an absolute output folder for the frames")
        if not job.frames:
            raise StyleError("the scene's frame range is empty")
        check_writable(job.out_dir, "frames output folder")
        return
    if job.source == "IMAGE" and job.image is None:
        raise StyleError("no source image: open an image in the Image Editor or pick one")
    if job.target == "TEXTURE":
        materials.check_texture_target(job.obj, (scene or bpy.context.scene) if tasks.from_render(job) else None)
    if job.target == "FILE":
        if not job.filepath:
            raise StyleError("choose an output file")
        path = os.path.normpath(bpy.path.abspath(job.filepath))
        if not os.path.isabs(path):
            raise StyleError("save the .blend file first, or choose an absolute output file path")
        if job.image is not None and job.image.filepath and os_rules.same_path(path, bpy.path.abspath(job.image.filepath)):
            raise StyleError("the output file is the source image's file; choose another so the source is kept")
        if os.path.isdir(path):
            raise StyleError(f"the output file {path} is a folder; choose a file name")
        check_writable(os.path.dirname(path), "output file's folder")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise StyleError(f"the output file {path} is read-only")


def check_writable(folder: str, what: str) -> None:
    """Make `folder` (and its parents) if needed and prove a file can be written there."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise StyleError(f"cannot write the {what} {folder}: it is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StyleError(f"cannot write the {what} {folder}: {exc.strerror or exc}") from None


def start(job: Job, steps, context=None) -> Task:
    """A task for `job` on the shared worker (started on first use); in background mode
    (`blender -b`, the `bpy` module) it prints its progress to stdout."""
    client = shared_worker(preferences.worker_config(context))
    return Task(client, lambda task: steps(task, job), echo=bpy.app.background)


def stylize_image(styles=None, *, scene=None, options=None, **fields) -> bpy.types.Image:
    """Stylize the scene's source (default: Render Result) into a new image and return it.

    `fields` are `Job` fields: source ("RENDER", "IMAGE", "SEQUENCE"),
    image, target ("IMAGE", "FILE", "TEXTURE"), filepath, obj.
    """
    job = build_job(scene or bpy.context.scene, styles, options, **fields)
    return start(job, tasks.stylize_image_steps).run()


def stylize_animation(styles=None, out_dir=None, *, scene=None, options=None, **fields) -> list[str]:
    """Stylize the scene's frame range into `out_dir/frame_####.png`.

    Frames already made there with the same styles and settings are kept
    (`existing_frames="RESUME"`, the default) or all are made again
    (`existing_frames="OVERWRITE"`); `out_dir/.neural_style.json` records what made each frame.
    """
    scene = scene or bpy.context.scene
    if out_dir is not None:
        fields["out_dir"] = bpy.path.abspath(out_dir)
    job = build_job(scene, styles, options, animation=True, **fields)
    return start(job, tasks.stylize_animation_steps).run()
