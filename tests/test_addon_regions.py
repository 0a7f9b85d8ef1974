"""Styles limited to objects, collections or materials: masks from the render's Cryptomatte passes (mattes.py)."""

from __future__ import annotations

import addon_support as support
import bpy
from addon_support import style  # noqa: F401 - fixture
import numpy as np
import pytest

from engine.exr import cryptomatte
from neural_style_addon import api, image_bridge, mattes, motion
from neural_style_addon.errors import StyleError


def limited_scene(style_path, limit="OBJECT"):
    scene = support.fresh_scene(transparent=False)
    support.plumbing_settings(scene, style_path)
    slot = scene.neural_style.styles[0]
    slot.limit = limit
    cube = bpy.data.objects["Cube"]
    slot.limit_object = cube
    slot.limit_collection = bpy.data.collections["Collection"]
    slot.limit_material = cube.active_material
    return scene, cube


def cube_coverage(scene, tmp_path, kind="object") -> np.ndarray:
    """The cube's (or its material's) coverage in the last render (which the run made with Cryptomatte on)."""
    path = motion.save_motion_exr(scene, str(tmp_path / "check.exr"))
    return cryptomatte(path, kind, ["Cube" if kind == "object" else bpy.data.objects["Cube"].active_material.name])


def assert_only_the_cube_is_stylized(scene, frame: int, path: str, tmp_path) -> None:
    """The written frame `path` equals a fresh render of `frame` wherever the cube is not (within 1.5/255), and
    differs from it where the cube is."""
    scene.frame_set(frame)
    saved = mattes.enable_passes(scene, {"object"})
    bpy.ops.render.render()
    mattes.restore_passes(scene, saved)
    rendered = image_bridge.read_render_result(scene, str(tmp_path))
    coverage = cube_coverage(scene, tmp_path)
    out = image_bridge.load_image_file(path)
    assert out.shape[:2] == rendered.shape[:2] and (coverage == 0).sum() > 100 and (coverage == 1).sum() > 20
    np.testing.assert_allclose(out[coverage == 0][:, :3], rendered[coverage == 0][:, :3], atol=1.5 / 255)
    assert np.abs(out[coverage == 1][:, :3] - rendered[coverage == 1][:, :3]).mean() > 0.02


@pytest.mark.parametrize("limit", ["OBJECT", "MATERIAL"])
def test_a_style_limited_to_the_cube_leaves_everything_else_as_rendered(style, tmp_path, limit):
    scene, _ = limited_scene(style, limit)
    layer = scene.view_layers[0]
    before = (layer.use_pass_cryptomatte_object, layer.use_pass_cryptomatte_material, layer.pass_cryptomatte_depth)

    result = api.stylize_image()

    assert (layer.use_pass_cryptomatte_object, layer.use_pass_cryptomatte_material,
            layer.pass_cryptomatte_depth) == before  # passes restored
    rendered = image_bridge.read_render_result(scene, str(tmp_path))
    coverage = cube_coverage(scene, tmp_path, mattes.LIMIT_KINDS[limit])
    out = support.pixels(result)[::-1]
    outside, inside = coverage == 0, coverage == 1
    assert outside.sum() > 100 and inside.sum() > 50
    np.testing.assert_allclose(out[outside][:, :3], rendered[outside][:, :3], atol=1.5 / 255)
    assert np.abs(out[inside][:, :3] - rendered[inside][:, :3]).mean() > 0.02


def test_unlimited_slots_style_the_rest_and_slots_sharing_a_limit_are_blended(style, tmp_path):
    scene, cube = limited_scene(style)
    second = support.write_style(tmp_path / "dots.png", size=(24, 24))
    job = api.build_job(scene, styles=[(str(style), 1.0, cube), (str(second), 0.5), (str(second), 0.25, cube)])
    assert mattes.region_specs(job.styles) == [
        {"styles": [0, 2], "mask": {"object": ["Cube"]}, "blend": [1.0, 0.25]},
        {"styles": [1], "mask": "rest", "blend": [0.5]},
    ]
    collection = api.build_job(scene, styles=[(str(style), 1.0, bpy.data.collections["Collection"])])
    assert mattes.region_specs(collection.styles)[0]["mask"] == {"object": ["Camera", "Cube", "Light"]}
    assert mattes.region_specs(api.build_job(scene, styles=[str(style)]).styles) is None


@pytest.mark.parametrize("temporal", [False, True])
def test_animation_masks_follow_each_frame(style, tmp_path, temporal):
    scene, cube = limited_scene(style)
    scene.frame_start, scene.frame_end = 1, 2
    cube.location.x = -0.6
    cube.keyframe_insert("location", frame=1)
    cube.location.x = 0.6
    cube.keyframe_insert("location", frame=2)
    scene.neural_style.temporal = temporal
    paths = api.stylize_animation(out_dir=str(tmp_path / "frames"))
    layer = scene.view_layers[0]
    assert not (layer.use_pass_cryptomatte_object or layer.use_pass_vector)  # passes restored
    for frame, path in zip((1, 2), paths):
        assert_only_the_cube_is_stylized(scene, frame, path, tmp_path)


@pytest.mark.parametrize("fields, message", [
    ({"source": "IMAGE"}, "need the render as the source"),
])
def test_limits_without_a_render_are_refused(style, fields, message):
    scene, _ = limited_scene(style)
    image = bpy.data.images.new("Photo", 16, 16)
    with pytest.raises(StyleError, match=message):
        api.build_job(scene, image=image, **fields)


def test_limits_in_fast_mode_and_empty_targets_are_refused(style, tmp_path):
    scene, _ = limited_scene(style)
    scene.neural_style.animation_mode = "FAST"
    with pytest.raises(StyleError, match="work with Optimize, not Fast mode"):
        api.build_job(scene, animation=True, out_dir=str(tmp_path))
    scene.neural_style.styles[0].limit_object = None
    with pytest.raises(StyleError, match="limited to an object but none is chosen"):
        api.build_job(scene)


def test_panel_draws_the_active_slots_limit_and_says_where_other_pixels_go(style):
    from test_addon_ui import draw

    from neural_style_addon import panels

    scene, cube = limited_scene(style)
    settings = scene.neural_style
    settings.styles.add().filepath = str(style)  # a second, unlimited slot
    settings.active_style = 0
    layout = draw(panels.IMAGE_PT_neural_style, scene)
    assert ("prop", "limit") in layout.calls and ("prop", "limit_object") in layout.calls
    assert any("take the unlimited styles" in text for text in layout.names("label"))
    settings.styles[1].limit = "MATERIAL"
    settings.active_style = 1
    layout = draw(panels.IMAGE_PT_neural_style, scene)
    assert ("prop", "limit_material") in layout.calls and ("prop", "limit_object") not in layout.calls
    assert any("stay as rendered" in text for text in layout.names("label"))


def test_far_stroke_size_reads_depth_and_restores_the_pass(style, tmp_path):
    scene = support.fresh_scene(transparent=False)
    support.plumbing_settings(scene, style)
    layer = scene.view_layers[0]
    assert not layer.use_pass_z
    bpy.ops.render.render()
    plain = support.pixels(api.stylize_image())
    scene.neural_style.depth_scale = 0.25
    job = api.build_job(scene)
    assert mattes.needs_passes(job) and mattes.region_specs(job.styles) is None
    deep = support.pixels(api.stylize_image())
    assert not layer.use_pass_z and not layer.use_pass_cryptomatte_object  # restored
    assert np.abs(deep - plain).max() > 1 / 255  # other style scales far away: another result
    with pytest.raises(StyleError, match="Far Stroke Size needs the render as the source"):
        api.build_job(scene, source="IMAGE", image=bpy.data.images.new("Photo", 8, 8))


def test_passes_turned_on_by_temporal_and_depth_are_all_restored(style, tmp_path):
    scene, cube = limited_scene(style)
    scene.frame_start, scene.frame_end = 1, 2
    scene.neural_style.temporal = True
    scene.neural_style.depth_scale = 0.5
    layer = scene.view_layers[0]
    before = (layer.use_pass_z, layer.use_pass_vector, layer.use_pass_cryptomatte_object, scene.render.use_motion_blur)
    api.stylize_animation(out_dir=str(tmp_path / "frames"))
    assert (layer.use_pass_z, layer.use_pass_vector, layer.use_pass_cryptomatte_object,
            scene.render.use_motion_blur) == before
