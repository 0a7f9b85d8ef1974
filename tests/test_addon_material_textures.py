"""Source "Active Material": a material's own image textures stylized in place (real bpy, random weights)."""

from __future__ import annotations

import hashlib
import os

import addon_support as support
import bpy
from addon_support import style  # noqa: F401 - fixture
import numpy as np
import pytest

from neural_style_addon import image_bridge, material_textures
from neural_style_addon.errors import StyleError


def _texture_file(path, size=(32, 32), seed=0) -> str:
    rng = np.random.default_rng(seed)
    rgba = np.concatenate([rng.random((*size, 3)), np.ones((*size, 1))], axis=2).astype(np.float32)
    rgba[..., 3] = 0.75  # alpha must survive
    image_bridge.save_png(rgba, str(path))
    return str(path)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture()
def textured(style, tmp_path):
    """A saved .blend: a plane with a Base Color texture (file on disk, Repeat) and a Non-Color roughness texture."""
    scene = support.fresh_scene()
    support.plumbing_settings(scene, style)
    bpy.ops.object.select_all(action="DESELECT")
    bpy.ops.mesh.primitive_plane_add(size=2.0)
    plane = bpy.context.view_layer.objects.active
    material = bpy.data.materials.new("Tiles")
    if not material.node_tree:
        material.use_nodes = True  # Blender 4; Blender 5 always has a node tree
    plane.data.materials.append(material)
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    colour = tree.nodes.new("ShaderNodeTexImage")
    colour.name = "Albedo"
    colour.image = bpy.data.images.load(_texture_file(tmp_path / "albedo.png"))
    colour.extension, colour.interpolation = "REPEAT", "Closest"
    rough = tree.nodes.new("ShaderNodeTexImage")
    rough.name = "Roughness Map"
    rough.image = bpy.data.images.load(_texture_file(tmp_path / "rough.png", seed=1))
    rough.image.colorspace_settings.name = "Non-Color"
    mapping = tree.nodes.new("ShaderNodeMapping")
    coords = tree.nodes.new("ShaderNodeTexCoord")
    tree.links.new(coords.outputs["UV"], mapping.inputs["Vector"])
    tree.links.new(mapping.outputs["Vector"], colour.inputs["Vector"])
    tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    tree.links.new(rough.outputs["Color"], bsdf.inputs["Roughness"])
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    plane = bpy.data.objects[plane.name]
    bpy.context.view_layer.objects.active = plane
    return plane, tmp_path


def _links(material):
    return sorted((l.from_node.name, l.from_socket.identifier, l.to_node.name, l.to_socket.identifier)
                  for l in material.node_tree.links)


def test_only_the_colour_texture_is_listed_as_picked_and_data_is_refused(textured):
    plane, _ = textured
    material = plane.active_material
    listed = {t.name: t for t in material_textures.textures(material)}
    assert listed["Albedo"].base_color and listed["Albedo"].node.neural_style_pick
    assert listed["Albedo"].node.neural_style_seamless  # the node repeats
    assert listed["Roughness Map"].is_data and not listed["Roughness Map"].node.neural_style_pick
    with pytest.raises(StyleError, match="holds data"):
        material_textures.picked(material, ["Roughness Map"])
    listed["Roughness Map"].node.neural_style_pick = True  # even ticked, data never goes
    assert [t.name for t in material_textures.picked(material)] == ["Albedo"]


def test_textures_are_stylized_in_place_and_restored(textured):
    plane, folder = textured
    material = plane.active_material
    albedo, rough = material.node_tree.nodes["Albedo"], material.node_tree.nodes["Roughness Map"]
    original, rough_image = albedo.image, rough.image
    original_path = bpy.path.abspath(original.filepath)
    before_file, links_before = _digest(original_path), _links(material)
    before_pixels = image_bridge.image_to_array(original)

    made = material_textures.stylize_textures(obj=plane)

    assert len(made) == 1 and albedo.image == made[0] and albedo.image != original
    assert rough.image == rough_image  # Non-Color untouched
    assert _links(material) == links_before
    assert (albedo.extension, albedo.interpolation) == ("REPEAT", "Closest")
    assert made[0].colorspace_settings.name == original.colorspace_settings.name
    assert tuple(made[0].size) == tuple(original.size)
    pixels = image_bridge.image_to_array(made[0])
    assert np.allclose(pixels[..., 3], 0.75, atol=1 / 255) and not np.allclose(pixels, before_pixels, atol=0.02)
    # A file beside the .blend, never the original's.
    new_path = bpy.path.abspath(made[0].filepath)
    assert os.path.isfile(new_path) and os.path.dirname(new_path) == str(folder / material_textures.RESULT_FOLDER)
    assert _digest(original_path) == before_file
    assert original.name in bpy.data.images and original.use_fake_user

    assert material_textures.restore(material) == 1
    assert albedo.image == original and not original.use_fake_user
    assert _links(material) == links_before
    assert material_textures.ORIGINAL not in albedo


def test_packed_float_texture_stays_float_with_alpha(textured):
    plane, _ = textured
    material = plane.active_material
    node = material.node_tree.nodes["Albedo"]
    image = bpy.data.images.new("hdr", 32, 32, alpha=True, float_buffer=True)
    ramp = np.linspace(0.05, 0.9, 32 * 32 * 4, dtype=np.float32)
    ramp[3::4] = 1.0
    image.pixels.foreach_set(ramp)
    image.pack()
    node.image = image
    made = material_textures.stylize_textures(obj=plane, nodes=["Albedo"], seamless=False)
    assert made[0].is_float and made[0].packed_file is not None and node.image == made[0]


def test_float_texture_on_disk_gives_an_exr_beside_the_blend(textured):
    plane, folder = textured
    node = plane.active_material.node_tree.nodes["Albedo"]
    image = bpy.data.images.new("hdr", 32, 32, alpha=True, float_buffer=True)
    pixels = np.random.default_rng(2).random(32 * 32 * 4).astype(np.float32) * 0.8
    pixels[3::4] = 0.5
    image.pixels.foreach_set(pixels)
    image.filepath_raw = str(folder / "hdr.exr")
    image.file_format = "OPEN_EXR"
    image.save()
    node.image = bpy.data.images.load(str(folder / "hdr.exr"))
    before = _digest(folder / "hdr.exr")
    made = material_textures.stylize_textures(obj=plane, nodes=["Albedo"])
    assert bpy.path.abspath(made[0].filepath).endswith(".exr") and made[0].is_float
    assert np.allclose(image_bridge.image_to_array(made[0])[..., 3], 0.5, atol=1e-3)
    assert _digest(folder / "hdr.exr") == before


def test_texel_density_gives_a_4k_and_a_1k_texture_the_same_scale(textured):
    plane, _ = textured  # a 2 x 2 m plane with UVs over the whole texture
    small = bpy.data.images.new("1k", 1024, 1024)
    large = bpy.data.images.new("4k", 4096, 4096)
    assert material_textures.texels_per_unit(plane, small) == pytest.approx(512)
    assert material_textures.texels_per_unit(plane, large) == pytest.approx(2048)
    assert material_textures.texture_style_scale(1.0, plane, small) == pytest.approx(0.5)
    assert material_textures.texture_style_scale(1.0, plane, large) == pytest.approx(0.5)
    plane.scale = (4, 4, 1)  # a 8 x 8 m wall: the 1 m style covers an eighth of the texture
    bpy.context.view_layer.update()
    assert material_textures.texture_style_scale(1.0, plane, small) == pytest.approx(0.125)


def test_udim_and_no_texture_are_refused_before_any_work(textured):
    plane, _ = textured
    material = plane.active_material
    node = material.node_tree.nodes["Albedo"]
    node.image.source = "TILED"
    with pytest.raises(StyleError, match="UDIM"):
        material_textures.stylize_textures(obj=plane, nodes=["Albedo"])
    node.image.source = "FILE"
    material.node_tree.nodes["Albedo"].neural_style_pick = False
    with pytest.raises(StyleError, match="no colour texture"):
        material_textures.stylize_textures(obj=plane)


def test_operators_stylize_and_restore_the_active_material(textured):
    plane, _ = textured
    node = plane.active_material.node_tree.nodes["Albedo"]
    original = node.image
    assert bpy.ops.image.neural_style_material_textures() == {"FINISHED"}
    assert node.image != original and original.name in bpy.data.images
    assert bpy.ops.image.neural_style_material_textures_restore() == {"FINISHED"}
    assert node.image == original


class _Layout:
    """Records what the panel draws (Panel.draw never runs headless)."""

    def __init__(self, calls):
        self.calls, self.enabled = calls, True

    def row(self, **kwargs):
        return _Layout(self.calls)

    def prop(self, data, name, text="", **kwargs):
        assert name in data.bl_rna.properties, name
        self.calls.append(("prop", name, text))

    def label(self, text="", **kwargs):
        self.calls.append(("label", text, self.enabled))

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.calls.append(("operator", idname))


def test_panel_lists_colour_textures_to_tick_and_data_greyed_out(textured):
    from types import SimpleNamespace

    calls = []
    panel = material_textures.IMAGE_PT_neural_style_material_textures
    panel.draw(SimpleNamespace(layout=_Layout(calls)), SimpleNamespace(view_layer=bpy.context.view_layer))
    assert ("prop", "neural_style_pick", "Albedo: albedo.png (sRGB)") in calls
    assert ("label", "Roughness Map: rough.png (Non-Color)", False) in calls
    assert ("operator", "image.neural_style_material_textures_restore") in calls
