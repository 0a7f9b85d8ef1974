"""Stylizing renders and images with real bpy, a real Cycles render and the real worker process."""

from __future__ import annotations

import os

import addon_support as support
import bpy
from addon_support import style  # noqa: F401 - fixture
import numpy as np
import pytest

from neural_style_addon import api, image_bridge
from neural_style_addon.errors import StyleError


@pytest.fixture()
def rendered(style):
    scene = support.fresh_scene()
    bpy.ops.render.render()
    return scene


def test_render_becomes_a_new_stylized_image_of_the_same_size(rendered, style, tmp_path):
    """The main path, with the default packaged VGG-16 weights (CI fetches them first)."""
    settings = rendered.neural_style
    settings.styles.add().filepath = str(style)
    settings.quality = "CUSTOM"
    settings.size, settings.iterations, settings.seed = 32, 5, 0
    before = image_bridge.read_render_result(rendered, str(tmp_path))

    assert bpy.ops.image.neural_style_apply() == {"FINISHED"}

    result = bpy.data.images["Render (waves)"]
    assert tuple(result.size) == (32, 24)
    assert not result.is_float and result.colorspace_settings.name == "sRGB"
    out = support.pixels(result)[::-1]
    assert np.abs(out[..., :3] - before[..., :3]).mean() > 0.01  # it was stylized
    np.testing.assert_allclose(out[..., 3], before[..., 3], atol=1 / 255)  # alpha kept
    assert (out[..., 3] == 0).any(), "transparent film must stay transparent"
    after = image_bridge.read_render_result(rendered, str(tmp_path))
    np.testing.assert_array_equal(after, before)  # the render itself is untouched


def test_render_is_read_as_srgb_with_straight_alpha(rendered, tmp_path):
    pixels = image_bridge.read_render_result(rendered, str(tmp_path))
    assert pixels.shape == (24, 32, 4) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    # Partly covered edge pixels are un-premultiplied: their colour matches solid neighbours, not black.
    edge = (pixels[..., 3] > 0.2) & (pixels[..., 3] < 0.8)
    solid = pixels[..., 3] > 0.99
    assert edge.any() and solid.any()
    assert pixels[edge][:, :3].mean() > 0.5 * pixels[solid][:, :3].mean()


def test_scene_output_format_is_restored_after_reading_the_render(rendered, tmp_path):
    settings = rendered.render.image_settings
    settings.file_format, settings.color_mode = "JPEG", "RGB"
    image_bridge.read_render_result(rendered, str(tmp_path))
    assert (settings.file_format, settings.color_mode) == ("JPEG", "RGB")


def test_material_texture_survives_save_and_reload(rendered, style, tmp_path):
    support.plumbing_settings(rendered, style)
    rendered.neural_style.target = "TEXTURE"
    cube = bpy.data.objects["Cube"]
    assert bpy.ops.image.neural_style_apply() == {"FINISHED"}
    node = cube.active_material.node_tree.nodes["Neural Style Texture"]
    links = [link for link in cube.active_material.node_tree.links if link.from_node == node]
    assert [(link.to_node.type, link.to_socket.name) for link in links] == [("BSDF_PRINCIPLED", "Base Color")]
    expected = support.pixels(node.image)

    # A second run reuses the node instead of adding another.
    assert bpy.ops.image.neural_style_apply() == {"FINISHED"}
    nodes = cube.active_material.node_tree.nodes
    assert sum(n.type == "TEX_IMAGE" for n in nodes) == 1

    first_name = node.image.name if node.image else None
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    image = bpy.data.objects["Cube"].active_material.node_tree.nodes["Neural Style Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (32, 24)
    assert first_name == image.name
    assert support.pixels(image).shape == expected.shape


def test_new_texture_material_is_created_for_an_object_without_one(rendered, style):
    support.plumbing_settings(rendered, style)
    cube = bpy.data.objects["Cube"]
    cube.data.materials.clear()
    image = api.stylize_image(target="TEXTURE", obj=cube)
    nodes = cube.active_material.node_tree.nodes
    assert nodes["Neural Style Texture"].image == image
    assert any(n.type == "BSDF_PRINCIPLED" for n in nodes)


def test_image_source_is_left_untouched_and_file_target_is_written(style, tmp_path):
    scene = support.fresh_scene()
    support.plumbing_settings(scene, style)
    source = bpy.data.images.new("Photo", 40, 30, alpha=True)
    source.pixels.foreach_set(np.random.default_rng(1).random(40 * 30 * 4).astype(np.float32))
    original = support.pixels(source).copy()
    out_file = tmp_path / "out" / "photo-styled.png"

    result = api.stylize_image(source="IMAGE", image=source, target="FILE", filepath=str(out_file))

    np.testing.assert_array_equal(support.pixels(source), original)
    assert result.name == "Photo (waves)" and result != source
    assert out_file.is_file() and bpy.path.abspath(result.filepath) == str(out_file)
    written = bpy.data.images.load(str(out_file))
    assert tuple(written.size) == (40, 30)


def test_result_names_are_unique_and_never_replace_an_image(style):
    scene = support.fresh_scene()
    support.plumbing_settings(scene, style)
    source = bpy.data.images.new("Photo", 32, 32)
    taken = bpy.data.images.new("Photo (waves)", 8, 8)
    result = api.stylize_image(source="IMAGE", image=source)
    assert result.name == "Photo (waves).001"
    assert tuple(taken.size) == (8, 8)


def test_two_weighted_styles_go_to_the_engine_as_a_blend(style, tmp_path):
    scene = support.fresh_scene()
    support.plumbing_settings(scene, style)
    second = support.write_style(tmp_path / "dots.png", size=(24, 24))
    job = api.build_job(scene, styles=[(str(style), 0.75), (str(second), 0.25)])
    assert job.options["style_blend_weights"] == [0.75, 0.25]
    assert [s.name for s in job.styles] == ["waves", "dots"]


def test_settings_translate_to_options_the_engine_accepts(style):
    from engine import StyleOptions

    scene = support.fresh_scene()
    settings = scene.neural_style
    settings.styles.add().filepath = str(style)
    for model in ("vgg16", "vgg19", "nin"):
        settings.model = model
        settings.quality = "HIGH"
        options = StyleOptions.from_dict(api.build_job(scene).options)
        assert options.model == model and options.iterations == 500 and options.size is None
        assert options.weights == ("packaged" if model == "vgg16" else "download")
    settings.strength = 2.0
    settings.seed = 3
    options = StyleOptions.from_dict(api.build_job(scene).options)
    assert options.style_weight == 2 * StyleOptions().style_weight and options.seed == 3


def test_quality_presets_set_size_and_iterations_and_editing_them_means_custom():
    settings = support.fresh_scene().neural_style
    settings.quality = "DRAFT"
    assert (settings.size, settings.iterations) == (384, 100)
    settings.iterations = 120
    assert settings.quality == "CUSTOM"
    settings.quality = "HIGH"
    assert (settings.size, settings.iterations, settings.quality) == (0, 500, "HIGH")


class TestBadInputsChangeNothing:
    """Each refuses with one clear message, before any work, leaving the file as it was."""

    def run_expecting(self, message):
        names = support.image_names()
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.image.neural_style_apply()
        assert support.image_names() == names

    def test_missing_style_file(self, rendered, style):
        support.plumbing_settings(rendered, style)
        rendered.neural_style.styles[0].filepath = "/nonexistent/starry.jpg"
        self.run_expecting("style image not found: /nonexistent/starry.jpg")

    def test_no_style_at_all(self, rendered):
        rendered.neural_style.styles.clear()
        self.run_expecting("add at least one style image")

    def test_empty_render(self, style):
        scene = support.fresh_scene()  # nothing rendered yet
        support.plumbing_settings(scene, style)
        self.run_expecting("render an image first")

    def test_no_active_object_for_texture_output(self, rendered, style):
        support.plumbing_settings(rendered, style)
        rendered.neural_style.target = "TEXTURE"
        bpy.context.view_layer.objects.active = None
        materials = {m.name for m in bpy.data.materials}
        self.run_expecting("texture output needs an active object")
        assert {m.name for m in bpy.data.materials} == materials

    def test_output_file_that_is_the_source_file(self, style, tmp_path):
        scene = support.fresh_scene()
        support.plumbing_settings(scene, style)
        source = bpy.data.images.load(str(style))
        settings = scene.neural_style
        settings.source, settings.source_image = "IMAGE", source
        settings.target, settings.output_path = "FILE", str(style)
        mtime = os.path.getmtime(style)
        self.run_expecting("the output file is the source image's file")
        assert os.path.getmtime(style) == mtime

    def test_api_raises_style_error(self, rendered):
        with pytest.raises(StyleError, match="style image not found"):
            api.stylize_image(["/nonexistent/a.png"])
