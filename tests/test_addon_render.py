"""Stylizing renders and images with real bpy, a real Cycles render and the real worker process."""

from __future__ import annotations

import os
import time

import addon_support as support
import bpy
from addon_support import style  # noqa: F401 - fixture
import numpy as np
import pytest

from neural_style_addon import api, image_bridge, materials, operators, tasks, worker_client
from neural_style_addon.errors import StyleError
from neural_style_addon.worker_client import WorkerClient


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
    # Through the Mix node that keeps the original Base Color on its other input (issue 10).
    assert [(link.to_node.type, link.to_socket.identifier) for link in links] == [("MIX", "B_Color")]
    mix_links = [link for link in cube.active_material.node_tree.links if link.from_node == links[0].to_node]
    assert [(link.to_node.type, link.to_socket.name) for link in mix_links] == [("BSDF_PRINCIPLED", "Base Color")]
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


# --- issue 10: abandoned work, unwritable outputs, textures from renders, background progress ---


def test_keyboard_interrupt_cancels_the_worker_job_and_the_next_job_is_not_stuck(rendered, style, monkeypatch):
    """Ctrl-C in a script (a KeyboardInterrupt out of the progress path) must not leave the worker busy."""
    support.plumbing_settings(rendered, style)
    events = []
    next_event = WorkerClient.next_event

    def interrupted(self, timeout=0.0):
        event = next_event(self, timeout)
        events.append(event or {})
        if event and event.get("event") == "progress" and event["total"] == 100000 and event["iteration"] == 2:
            raise KeyboardInterrupt
        return event

    monkeypatch.setattr(WorkerClient, "next_event", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.stylize_image(options={"iterations": 100000})
    old = next(e["id"] for e in events if e.get("event") == "progress")
    # The old job was cancelled (its temp folder went only after that), not left running.
    assert [e["event"] for e in events if e.get("id") == old and e.get("event") != "progress"] == ["cancelled"]
    assert operators.running is None

    started = time.monotonic()
    image = api.stylize_image(options={"iterations": 2})
    assert time.monotonic() - started < 60 and tuple(image.size) == (32, 24)
    assert not [line for line in worker_client._shared.stderr_tail if "Traceback" in line or "No such file" in line]


def test_unwritable_output_file_is_refused_before_any_work(rendered, style, tmp_path, monkeypatch):
    support.plumbing_settings(rendered, style)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    sent = []
    send = WorkerClient.send
    monkeypatch.setattr(WorkerClient, "send", lambda self, message: sent.append(message) or send(self, message))
    names = support.image_names()
    with pytest.raises(StyleError, match=r"^cannot write the output file's folder .*not-a-folder"):
        api.stylize_image(target="FILE", filepath=str(blocker / "out.png"))
    assert sent == [] and support.image_names() == names


def test_unwritable_animation_folder_is_refused_before_any_work(rendered, style, monkeypatch):
    support.plumbing_settings(rendered, style)
    renders = []
    send = WorkerClient.send
    monkeypatch.setattr(WorkerClient, "send", lambda self, message: renders.append(message) or send(self, message))
    count = lambda *_: renders.append(1)  # noqa: E731
    bpy.app.handlers.render_pre.append(count)
    try:
        with pytest.raises(StyleError, match=r"^cannot write the frames output folder /proc/neural-style"):
            api.stylize_animation(out_dir="/proc/neural-style/frames")
    finally:
        bpy.app.handlers.render_pre.remove(count)
    assert renders == []


def emission_view(material) -> None:
    """Show the Base Color input unlit (so a render shows the texture as it is)."""
    tree = material.node_tree
    bsdf = next(node for node in tree.nodes if node.type == "BSDF_PRINCIPLED")
    emission = tree.nodes.new("ShaderNodeEmission")
    tree.links.new(bsdf.inputs["Base Color"].links[0].from_socket, emission.inputs["Color"])
    output = next(node for node in tree.nodes if node.type == "OUTPUT_MATERIAL")
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])


def test_texture_from_a_render_lands_where_the_camera_saw_it(style, tmp_path):
    scene = support.fresh_scene(resolution=(48, 32))
    scene.view_settings.view_transform = "Standard"  # a render then shows sRGB texture values unchanged
    bpy.ops.render.render()
    height, width = 32, 48
    y, x = np.mgrid[0:height, 0:width]
    checker = np.stack([(x % 8 < 4) * 0.9 + 0.05, (y % 8 < 4) * 0.9 + 0.05, x / width, np.ones((height, width))], -1)
    image = image_bridge.new_image("Render (checker)", width, height)
    image_bridge.array_to_image(image, checker.astype(np.float32))
    cube = bpy.data.objects["Cube"]

    materials.assign_texture(cube, image, scene)
    emission_view(cube.active_material)
    scene.cycles.samples = 4
    bpy.ops.render.render()
    seen = image_bridge.read_render_result(scene, str(tmp_path))

    covered = seen[..., 3] > 0.99
    assert covered.sum() > 100
    # Each covered pixel shows the texture's pixel at the same place (object UVs would smear it: error ~0.35).
    assert np.abs(seen[..., :3] - checker[..., :3])[covered].mean() < 0.1


def test_texture_keeps_the_original_base_color_and_can_be_removed(rendered, style):
    support.plumbing_settings(rendered, style)
    cube = bpy.data.objects["Cube"]
    tree = cube.active_material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    original = tree.nodes.new("ShaderNodeTexChecker")
    tree.links.new(original.outputs["Color"], bsdf.inputs["Base Color"])

    image = api.stylize_image(target="TEXTURE", obj=cube)

    mix = tree.nodes[materials.MIX_NAME]
    assert bsdf.inputs["Base Color"].links[0].from_node == mix
    inputs = {socket.identifier: socket for socket in mix.inputs}
    assert inputs["Factor_Float"].default_value == 1.0
    assert inputs["A_Color"].links[0].from_node == original  # still wired: factor 0 shows it again
    assert inputs["B_Color"].links[0].from_node.image == image
    vector = tree.nodes[materials.NODE_NAME].inputs["Vector"].links[0].from_node
    assert vector.type == "UVMAP" and vector.uv_map == materials.CAMERA_UV

    materials.remove_texture(cube)
    assert bsdf.inputs["Base Color"].links[0].from_node == original
    assert materials.MIX_NAME not in tree.nodes and materials.NODE_NAME not in tree.nodes
    assert materials.CAMERA_UV not in cube.data.uv_layers


def test_undo_restores_the_material(rendered, style):
    support.plumbing_settings(rendered, style)
    rendered.neural_style.target = "TEXTURE"
    material = bpy.data.objects["Cube"].active_material.name
    before = sorted(node.name for node in bpy.data.materials[material].node_tree.nodes)
    bpy.ops.ed.undo_push(message="before stylize")

    assert bpy.ops.image.neural_style_apply("EXEC_DEFAULT", True) == {"FINISHED"}  # True: with its undo step
    assert materials.NODE_NAME in bpy.data.materials[material].node_tree.nodes
    bpy.ops.ed.undo()

    tree = bpy.data.materials[material].node_tree
    assert sorted(node.name for node in tree.nodes) == before
    assert tree.nodes["Principled BSDF"].inputs["Base Color"].links == ()


def test_background_runs_print_progress_lines(rendered, style, capfd):
    support.plumbing_settings(rendered, style)
    api.stylize_image(options={"iterations": 4})
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("Neural Style: ")]
    assert any("iteration 4/4" in line for line in lines) and 2 <= len(lines) <= 30


def test_opening_another_file_cancels_the_running_job(rendered, style, monkeypatch):
    """The add-on's load_pre handler ends the running operator's task; its worker job is cancelled."""
    support.plumbing_settings(rendered, style)
    events = []
    next_event = WorkerClient.next_event
    monkeypatch.setattr(WorkerClient, "next_event",
                        lambda self, timeout=0.0: events.append(next_event(self, timeout) or {}) or events[-1] or None)
    task = operators.running = api.start(api.build_job(rendered, options={"iterations": 100000}),
                                         tasks.stylize_image_steps)
    while not any(event.get("event") == "progress" for event in events):
        assert task.step(), task.error

    bpy.ops.wm.read_factory_settings(use_empty=True)

    assert operators.running is None and task.finished and task.cancelled
    job = next(event["id"] for event in events if event.get("event") == "progress")
    assert [e["event"] for e in events if e.get("id") == job and e["event"] != "progress"] == ["cancelled"]
