"""The add-on's motion-vector hooks with real bpy and a real Cycles render."""

from __future__ import annotations

import addon_support as support
import bpy
import numpy as np

from engine.exr import read_render
from neural_style_addon import motion


def test_enable_motion_passes_and_restore_put_everything_back():
    scene = support.fresh_scene()
    layer = scene.view_layers[0]
    scene.render.use_motion_blur = True
    layer.use_pass_vector, layer.use_pass_z = False, False
    saved = motion.enable_motion_passes(scene)
    assert layer.use_pass_vector and layer.use_pass_z and not scene.render.use_motion_blur
    motion.restore_settings(scene, saved)
    assert scene.render.use_motion_blur and not layer.use_pass_vector and not layer.use_pass_z


def test_save_motion_exr_writes_vectors_and_keeps_the_output_format(tmp_path):
    scene = support.fresh_scene(transparent=False)
    cube = bpy.data.objects["Cube"]
    for frame, x in ((1, 0.0), (2, 0.5)):
        cube.location.x = x
        cube.keyframe_insert("location", frame=frame)
    scene.render.image_settings.file_format = "PNG"
    saved = motion.enable_motion_passes(scene)
    scene.frame_set(2)
    bpy.ops.render.render()
    path = motion.save_motion_exr(scene, str(tmp_path / "frame_0002.exr"))
    motion.restore_settings(scene, saved)
    assert scene.render.image_settings.file_format == "PNG"
    render = read_render(path)
    assert render.image.shape == (24, 32, 4) and render.to_prev.shape == (24, 32, 2)
    moving = np.abs(render.to_prev[..., 0]) > 0.5
    assert moving.any(), "the cube moved right, so some pixels point left to where they were"
    assert (render.to_prev[..., 0][moving] < 0).all()
