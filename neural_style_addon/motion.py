"""Blender's side of temporal coherence: render frames with their motion vectors.

The engine (engine/temporal.py) warps the previous stylized frame along the
Vector pass, so each rendered frame is also saved as a multilayer EXR holding
the Combined, Vector and Depth passes (`save_motion_exr`).  Cycles writes the
Vector pass only with motion blur off, so `enable_motion_passes` turns it off
for the run and `restore_settings` puts everything back.  Plain functions; no torch.
(benchmarks/demo_scene.py renders a test animation through these hooks.)
"""

from __future__ import annotations

import bpy

from .image_bridge import RENDER_RESULT

# The image settings a multilayer EXR with exact (32-bit float) vectors needs.
_EXR_SETTINGS = {"media_type": "MULTI_LAYER_IMAGE", "file_format": "OPEN_EXR_MULTILAYER", "color_depth": "32", "exr_codec": "ZIP"}


def enable_motion_passes(scene: bpy.types.Scene) -> dict:
    """Turn on the Vector and Depth passes of every view layer and turn off motion blur.

    Returns the previous values for `restore_settings`.
    """
    saved = {"use_motion_blur": scene.render.use_motion_blur, "layers": {}}
    for layer in scene.view_layers:
        saved["layers"][layer.name] = (layer.use_pass_vector, layer.use_pass_z)
        layer.use_pass_vector = True
        layer.use_pass_z = True
    scene.render.use_motion_blur = False
    return saved


def restore_settings(scene: bpy.types.Scene, saved: dict) -> None:
    scene.render.use_motion_blur = saved["use_motion_blur"]
    for layer in scene.view_layers:
        if layer.name in saved["layers"]:
            layer.use_pass_vector, layer.use_pass_z = saved["layers"][layer.name]


def save_motion_exr(scene: bpy.types.Scene, path: str) -> str:
    """Save the last render (all passes) as a multilayer EXR; the output format is restored afterwards."""
    result = bpy.data.images.get(RENDER_RESULT)
    if result is None:
        raise RuntimeError("there is no render to save motion vectors from")
    settings = scene.render.image_settings
    names = [name for name in _EXR_SETTINGS if hasattr(settings, name)]  # media_type is new in Blender 5.0
    keep = {name: getattr(settings, name) for name in names}
    try:
        for name in names:
            setattr(settings, name, _EXR_SETTINGS[name])
        result.save_render(path, scene=scene)
    finally:
        for name, value in keep.items():
            setattr(settings, name, value)
    return path
