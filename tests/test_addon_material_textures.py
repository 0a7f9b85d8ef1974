"""Source "Active Material": a material's own image textures stylized in place (real bpy, random weights)."""

from __future__ import annotations

import hashlib
import os

import addon_support as support
import bpy
from addon_support import style  # noqa: F401 - fixture
import numpy as np
import pytest

from neural_style_addon import image_bridge, material_textures, texture_files, texture_scale
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
    assert os.path.isfile(new_path) and os.path.dirname(new_path) == str(folder / texture_files.RESULT_FOLDER)
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
    assert texture_scale.texels_per_unit(plane, small) == pytest.approx(512)
    assert texture_scale.texels_per_unit(plane, large) == pytest.approx(2048)
    assert texture_scale.texture_style_scale(1.0, plane, small) == pytest.approx(0.5)
    assert texture_scale.texture_style_scale(1.0, plane, large) == pytest.approx(0.5)
    plane.scale = (4, 4, 1)  # a 8 x 8 m wall: the 1 m style covers an eighth of the texture
    bpy.context.view_layer.update()
    assert texture_scale.texture_style_scale(1.0, plane, small) == pytest.approx(0.125)


def test_mapping_scale_counts_in_the_stroke_size(textured):
    plane, _ = textured  # 2 x 2 m plane, UVs over the texture once, Albedo's Vector through a Mapping node
    node = plane.active_material.node_tree.nodes["Albedo"]
    mapping = node.inputs["Vector"].links[0].from_node
    image = bpy.data.images.new("1k", 1024, 1024)
    node.image = image
    assert texture_scale.texels_per_unit(plane, image, node=node) == pytest.approx(512)
    mapping.inputs["Scale"].default_value = (2, 2, 1)  # the texture repeats 2 x 2 times: twice the texels per m
    assert texture_scale.texels_per_unit(plane, image, node=node) == pytest.approx(1024)
    assert texture_scale.texture_style_scale(1.0, plane, image, node=node) == pytest.approx(1.0)
    mapping.inputs["Scale"].default_value = (4, 1, 1)  # anisotropic: the geometric mean
    assert texture_scale.texels_per_unit(plane, image, node=node) == pytest.approx(1024)
    mapping.vector_type = "TEXTURE"  # the inverse transform: the texture is stretched 4 x 1
    assert texture_scale.texels_per_unit(plane, image, node=node) == pytest.approx(256)
    mapping.vector_type = "POINT"
    reroute = plane.active_material.node_tree.nodes.new("NodeReroute")  # reroutes are followed
    tree = plane.active_material.node_tree
    tree.links.new(mapping.outputs["Vector"], reroute.inputs[0])
    tree.links.new(reroute.outputs[0], node.inputs["Vector"])
    assert texture_scale.texels_per_unit(plane, image, node=node) == pytest.approx(1024)
    # ... and a run uses it: the job's style_scale for the Albedo texture
    job = material_textures.build_job(bpy.context.scene)
    texture = next(t for t in material_textures.textures(plane.active_material) if t.name == "Albedo")
    assert material_textures.texture_options(job, plane, texture, None)["style_scale"] == pytest.approx(1.0)


def test_udim_tile_uses_its_own_size_and_the_faces_in_it(textured):
    plane, folder = textured  # 2 x 2 m plane: two triangles of 2 m^2
    image = _udim(folder, sizes={1001: (32, 32), 1002: (64, 64)})
    assert texture_scale.texels_per_unit(plane, image, tile=1001) == pytest.approx(16)  # 32 px over 2 m
    assert texture_scale.texels_per_unit(plane, image, tile=1002) == pytest.approx(32)  # no face: all faces
    mesh = plane.data
    mesh.calc_loop_triangles()
    triangles = sorted(tuple(sorted(t.vertices)) for t in mesh.loop_triangles)
    uv_of_vertex = {0: (0.1, 0.1), 1: (1.9, 0.1), 2: (0.1, 0.5), 3: (1.9, 0.9)}  # primitive plane: 0 1 / 2 3
    for loop in mesh.loops:
        mesh.uv_layers.active.data[loop.index].uv = uv_of_vertex[loop.vertex_index]
    areas = {}
    for tri in triangles:
        (x0, y0), (x1, y1), (x2, y2) = (uv_of_vertex[v] for v in tri)
        tile = 1001 + int((x0 + x1 + x2) // 3)
        areas[tile] = areas.get(tile, 0) + abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)) / 2
    assert sorted(areas) == [1001, 1002] and areas[1001] != pytest.approx(areas[1002])  # one triangle in each
    for tile, side in ((1001, 32), (1002, 64)):
        expected = (side * side * areas[tile] / 2) ** 0.5  # each triangle covers 2 m^2
        assert texture_scale.texels_per_unit(plane, image, tile=tile) == pytest.approx(expected)
        assert texture_scale.texture_style_scale(1.0, plane, image, tile=tile) == pytest.approx(expected / side)


@pytest.mark.parametrize("float_buffer, tolerance", [(False, 0.5 / 255), (True, 1e-5)])
def test_texture_files_read_back_as_written(tmp_path, float_buffer, tolerance):
    rng = np.random.default_rng(5)
    pixels = rng.random((12, 20, 4)).astype(np.float32)
    pixels[..., 3] = np.linspace(0.2, 1.0, 20)
    path = str(tmp_path / ("t.exr" if float_buffer else "t.png"))
    texture_files.write_texture_file(path, pixels, float_buffer)
    image = bpy.data.images.load(path, check_existing=False)
    assert image.is_float == float_buffer
    assert np.abs(image_bridge.image_to_array(image) - pixels).max() < tolerance


def _udim(folder, name="tex", sizes={1001: (32, 32), 1002: (24, 16)}) -> bpy.types.Image:
    """A UDIM image on disk: one PNG per tile, different content (and size: rows, columns) in each."""
    for seed, (number, size) in enumerate(sizes.items(), start=3):
        _texture_file(folder / f"{name}.{number}.png", size=size, seed=seed)
    image = bpy.data.images.load(str(folder / f"{name}.{min(sizes)}.png"))
    image.source = "TILED"  # Blender finds the other tiles and puts <UDIM> in the path
    assert sorted(t.number for t in image.tiles) == sorted(sizes)
    return image


def _tile_files(image) -> dict[int, str]:
    path = bpy.path.abspath(image.filepath)
    return {t.number: texture_files.tile_path(path, t.number) for t in image.tiles}


def test_udim_tiles_are_read_each_as_blender_reads_it(textured):
    _, folder = textured
    image = _udim(folder)
    tiles = dict(texture_files.read_tiles(image, str(folder)))
    assert sorted(tiles) == [1001, 1002]
    assert tiles[1001].shape == (32, 32, 4) and tiles[1002].shape == (24, 16, 4)  # rows x columns
    assert np.array_equal(tiles[1001], image_bridge.image_to_array(image))  # Blender's own first tile
    assert np.array_equal(tiles[1002], image_bridge.load_image_file(str(folder / "tex.1002.png")))
    assert not np.allclose(tiles[1001][:24, :16], tiles[1002], atol=0.05)


def test_udim_texture_becomes_a_new_udim_with_every_tile_stylized(textured):
    plane, folder = textured
    material = plane.active_material
    node = material.node_tree.nodes["Albedo"]
    original = node.image = _udim(folder)
    assert node.extension == "REPEAT" and not node.neural_style_seamless  # a UDIM's tiles are not tori
    before = {n: _digest(path) for n, path in _tile_files(original).items()}
    sources = dict(texture_files.read_tiles(original, str(folder)))
    links_before = _links(material)

    made = material_textures.stylize_textures(obj=plane)

    result = made[0]
    assert node.image == result != original and result.source == "TILED"
    assert {t.number: tuple(t.size) for t in result.tiles} == {t.number: tuple(t.size) for t in original.tiles}
    assert (result.colorspace_settings.name, result.alpha_mode) == (original.colorspace_settings.name,
                                                                    original.alpha_mode)
    assert "<UDIM>" in result.filepath and _links(material) == links_before
    files = _tile_files(result)
    assert all(os.path.dirname(path) == str(folder / texture_files.RESULT_FOLDER) for path in files.values())
    for number, path in files.items():  # each tile file read on its own, not through read_tiles
        pixels = image_bridge.load_image_file(path)
        assert pixels.shape == sources[number].shape
        assert np.allclose(pixels[..., 3], 0.75, atol=1 / 255)
        assert not np.allclose(pixels, sources[number], atol=0.02), number
    assert np.array_equal(image_bridge.image_to_array(result), image_bridge.load_image_file(files[1001]))
    assert {n: _digest(path) for n, path in _tile_files(original).items()} == before  # originals untouched
    assert original.name in bpy.data.images and original.use_fake_user

    assert material_textures.restore(material) == 1
    assert node.image == original and not original.use_fake_user


def test_packed_udim_gives_a_packed_udim(textured):
    plane, folder = textured
    node = plane.active_material.node_tree.nodes["Albedo"]
    original = node.image = _udim(folder, "packed", {1001: (32, 32), 1003: (32, 32)})
    original.pack()
    sources = dict(texture_files.read_tiles(original, str(folder)))
    made = material_textures.stylize_textures(obj=plane, nodes=["Albedo"])
    result = made[0]
    assert result.source == "TILED" and sorted(t.number for t in result.tiles) == [1001, 1003]
    assert sorted(item.tile_number for item in result.packed_files) == [1001, 1003]
    assert not os.path.exists(folder / texture_files.RESULT_FOLDER)  # nothing beside the .blend
    tiles = dict(texture_files.read_tiles(result, str(folder)))
    for number in (1001, 1003):
        assert not np.allclose(tiles[number], sources[number], atol=0.02), number
    assert not np.allclose(tiles[1001], tiles[1003], atol=0.02)
    assert node.image == result and original.packed_file is not None


def test_udim_with_a_tile_that_has_no_file_is_refused_before_any_work(textured):
    plane, folder = textured
    node = plane.active_material.node_tree.nodes["Albedo"]
    node.image = _udim(folder)
    node.image.tiles.new(tile_number=1011)  # generated in memory, no file
    with pytest.raises(StyleError, match="no file for tile 1011"):
        material_textures.stylize_textures(obj=plane, nodes=["Albedo"])
    assert node.image.source == "TILED" and node.image.filepath.endswith("tex.<UDIM>.png")
    assert material_textures.ORIGINAL not in node


def test_no_ticked_texture_is_refused_before_any_work(textured):
    plane, _ = textured
    material = plane.active_material
    material.node_tree.nodes["Albedo"].neural_style_pick = False
    with pytest.raises(StyleError, match="no colour texture"):
        material_textures.stylize_textures(obj=plane)


def test_an_animation_from_the_active_material_source_is_refused(textured):
    from neural_style_addon import api

    plane, tmp_path = textured
    bpy.context.scene.neural_style.source = "MATERIAL"
    with pytest.raises(StyleError, match="not a single image or a material's textures"):
        api.stylize_animation(out_dir=str(tmp_path / "frames"))
    assert not (tmp_path / "frames").exists()


def test_operators_stylize_and_restore_the_active_material(textured):
    plane, _ = textured
    node = plane.active_material.node_tree.nodes["Albedo"]
    original = node.image
    assert bpy.ops.image.neural_style_material_textures() == {"FINISHED"}
    assert node.image != original and original.name in bpy.data.images
    assert bpy.ops.image.neural_style_material_textures_restore() == {"FINISHED"}
    assert node.image == original


def test_stylize_button_with_the_active_material_source_stylizes_the_ticked_textures(textured):
    plane, _ = textured
    settings = bpy.context.scene.neural_style
    nodes = plane.active_material.node_tree.nodes
    albedo, rough = nodes["Albedo"], nodes["Roughness Map"]
    original, rough_image = albedo.image, rough.image
    settings.source = "MATERIAL"
    settings.target = "FILE"  # not used by this source: nothing is written to output_path
    settings.output_path = "//must-not-exist.png"
    assert bpy.ops.image.neural_style_apply() == {"FINISHED"}
    assert albedo.image != original and albedo.image.name.startswith(original.name)
    assert rough.image == rough_image and not os.path.exists(bpy.path.abspath(settings.output_path))
    assert bpy.ops.image.neural_style_material_textures_restore() == {"FINISHED"}
    assert albedo.image == original
    albedo.neural_style_pick = False  # nothing ticked: refused, nothing made
    count = len(bpy.data.images)
    with pytest.raises(RuntimeError, match="no colour texture"):
        bpy.ops.image.neural_style_apply()
    assert albedo.image == original and len(bpy.data.images) == count


class _Layout:
    """Records what the panel draws (Panel.draw never runs headless)."""

    def __init__(self, calls):
        self.calls, self.enabled, self.active, self.use_property_split = calls, True, True, False

    def row(self, **kwargs):
        return _Layout(self.calls)

    column = box = row

    def prop(self, data, name, text=None, **kwargs):
        assert name in data.bl_rna.properties, name
        self.calls.append(("prop", name, text))

    def label(self, text="", **kwargs):
        self.calls.append(("label", text, self.enabled))

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.calls.append(("operator", idname))

    def template_list(self, *args, **kwargs):
        self.calls.append(("template_list",))

    def template_ID(self, data, name, **kwargs):
        self.calls.append(("template_ID", name))


def _draw_main_panel():
    from types import SimpleNamespace

    from neural_style_addon import panels

    calls = []
    context = SimpleNamespace(scene=bpy.context.scene, view_layer=bpy.context.view_layer,
                              preferences=bpy.context.preferences)
    panels.IMAGE_PT_neural_style.draw(SimpleNamespace(layout=_Layout(calls)), context)
    return calls


def test_source_menu_active_material_lists_textures_to_tick_and_data_greyed_out(textured):
    plane, folder = textured
    settings = bpy.context.scene.neural_style
    assert "MATERIAL" in settings.bl_rna.properties["source"].enum_items.keys()
    assert not any(call[:2] == ("prop", "neural_style_pick") for call in _draw_main_panel())  # Render Result

    settings.source = "MATERIAL"
    calls = _draw_main_panel()
    assert calls.index(("prop", "source", None)) < calls.index(("prop", "neural_style_pick", "Albedo: albedo.png (sRGB)"))
    assert ("prop", "neural_style_seamless", "") in calls
    assert ("label", "Roughness Map: rough.png (Non-Color)", False) in calls
    assert ("operator", "image.neural_style_material_textures_restore") in calls
    assert ("operator", "image.neural_style_apply") in calls
    assert ("prop", "target", None) not in calls  # the results go back into the nodes

    plane.active_material.node_tree.nodes["Albedo"].image = _udim(folder)
    assert ("prop", "neural_style_pick", "Albedo: tex.1001.png (UDIM, 2 tiles, sRGB)") in _draw_main_panel()
    bpy.context.view_layer.objects.active = None
    assert ("label", "the Active Material source needs an active object: select one first", True) in _draw_main_panel()
