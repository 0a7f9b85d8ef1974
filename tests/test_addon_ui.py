"""Panels, the style list and preferences drawn against a recording layout (Panel.draw never runs headless)."""

from __future__ import annotations

import json
import sys
import threading
import time
from types import SimpleNamespace

import addon_support as support
import bpy
import pytest

from neural_style_addon import dependencies, job, operators, package_sets, panels, preferences, timings


class Layout:
    """Records what a draw function asks for; rows and columns record into the same list."""

    def __init__(self, calls=None, kwargs=None):
        self.calls = calls if calls is not None else []
        self.kwargs = kwargs if kwargs is not None else {}  # (kind, name) -> the keywords it was drawn with
        self.use_property_split = False
        self.active = True

    def _child(self, *args, **kwargs):
        return Layout(self.calls, self.kwargs)

    row = column = box = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"no property {name!r} on {data}"
        self.calls.append(("prop", name))
        self.kwargs[("prop", name)] = kwargs

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.calls.append(("operator", idname))

    def label(self, text="", **kwargs):
        self.calls.append(("label", text))

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs):
        assert hasattr(bpy.types, list_type) and prop in data.bl_rna.properties
        self.calls.append(("template_list", prop))

    def template_ID(self, data, prop, **kwargs):
        self.calls.append(("template_ID", prop))

    def names(self, kind):
        return [name for call, name in self.calls if call == kind]


def draw(panel_cls, scene):
    layout = Layout()
    panel_cls.draw(SimpleNamespace(layout=layout), SimpleNamespace(scene=scene, preferences=bpy.context.preferences))
    return layout


@pytest.fixture()
def scene():
    return support.fresh_scene()


def test_main_panel_shows_source_styles_settings_and_the_button(scene):
    layout = draw(panels.IMAGE_PT_neural_style, scene)
    assert layout.use_property_split
    assert layout.names("prop") == ["source", "strength", "model", "quality", "preserve_colors", "device", "target"]
    assert layout.names("template_list") == ["styles"]
    assert layout.names("operator") == [
        "image.neural_style_style_add", "image.neural_style_style_remove", "image.neural_style_apply"]


@pytest.mark.parametrize("source, shown", [("IMAGE", ("template_ID", "source_image")), ("SEQUENCE", ("prop", "sequence_dir"))])
def test_source_choice_shows_its_input(scene, source, shown):
    scene.neural_style.source = source
    assert shown in draw(panels.IMAGE_PT_neural_style, scene).calls


def test_file_output_asks_for_a_path(scene):
    scene.neural_style.target = "FILE"
    assert ("prop", "output_path") in draw(panels.IMAGE_PT_neural_style, scene).calls


def test_running_task_shows_progress_and_cancel(scene, monkeypatch):
    task = SimpleNamespace(status=job.Status("iteration 3/10", 0.3))
    monkeypatch.setattr(operators, "running", task)
    layout = draw(panels.IMAGE_PT_neural_style, scene)
    assert ("label", "iteration 3/10") in layout.calls
    assert layout.names("operator")[-1] == "image.neural_style_cancel"
    assert "image.neural_style_apply" not in layout.names("operator")


def test_advanced_and_animation_sub_panels(scene):
    assert panels.IMAGE_PT_neural_style_advanced.bl_parent_id == "IMAGE_PT_neural_style"
    assert draw(panels.IMAGE_PT_neural_style_advanced, scene).names("prop") == [
        "size", "iterations", "optimizer", "style_scale", "depth_scale", "weights", "seed", "preview_every"]
    animation = draw(panels.IMAGE_PT_neural_style_animation, scene)
    assert animation.names("prop") == [
        "animation_dir", "existing_frames", "load_sequence", "add_strip", "animation_mode", "fast_steps", "temporal",
        "temporal_weight", "temporal_blend"]  # the optimisation's; Fast mode shows its own Blend (below)
    assert animation.names("operator") == ["image.neural_style_animation"]


def test_panels_live_in_the_image_editor_style_tab():
    for cls in panels.classes[1:]:
        assert (cls.bl_space_type, cls.bl_region_type, cls.bl_category) == ("IMAGE_EDITOR", "UI", "Style")
        assert hasattr(bpy.types, cls.__name__)


def test_style_list_row_shows_the_right_field_for_each_kind(scene):
    item = scene.neural_style.styles.add()
    for kind, field in (("FILE", "filepath"), ("IMAGE", "image")):
        item.kind = kind
        layout = Layout()
        panels.NEURAL_STYLE_UL_styles.draw_item(None, None, layout, None, item, 0, None, "")
        assert layout.names("prop") == ["kind", field, "weight"]


def test_style_slots_are_added_and_removed_by_operators(scene):
    settings = scene.neural_style
    bpy.ops.image.neural_style_style_add(filepath="/tmp/a.png")
    bpy.ops.image.neural_style_style_add()
    assert [s.filepath for s in settings.styles] == ["/tmp/a.png", ""] and settings.active_style == 1
    bpy.ops.image.neural_style_style_remove()
    assert [s.filepath for s in settings.styles] == ["/tmp/a.png"] and settings.active_style == 0


def draw_preferences(ray_address="") -> Layout:
    layout = Layout()
    prefs = SimpleNamespace(layout=layout, python_path="", device="auto", cache_dir="", ray_address=ray_address,
                            ray_token_file="", cpu_only=False, torch_index="",
                            bl_rna=preferences.NeuralStylePreferences.bl_rna)
    preferences.NeuralStylePreferences.draw(prefs, bpy.context)
    return layout


def wait_for_probe(timeout=180.0) -> None:
    deadline = time.monotonic() + timeout
    while dependencies.probing() or package_sets.asking():
        assert time.monotonic() < deadline, "the probe of the worker's Python never finished"
        time.sleep(0.1)


def test_preferences_draw_offers_python_device_cache_cluster_and_install(monkeypatch):
    dependencies.forget_probes()
    draw_preferences()  # starts the probe of Blender's Python on a thread
    wait_for_probe()
    layout = draw_preferences()
    # This machine (Linux x64, no NVIDIA driver) gets the CPU set, whose torch comes from the PyTorch index.
    assert layout.names("prop") == ["python_path", "device", "cache_dir", "ray_address", "cpu_only", "torch_index"]
    assert draw_preferences("head:6379").names("prop")[3:5] == ["ray_address", "ray_token_file"]  # with a cluster
    assert layout.names("operator") == ["neural_style.install_dependencies"]
    assert "Using Blender's Python" in layout.names("label")
    assert "Installed: torch 2.13.0, CPU only" in layout.names("label")  # what the probe found, in one line
    assert "Packages for this machine: no NVIDIA GPU found: CPU only, about 0.5 GB to download" in layout.names("label")


def test_preferences_draw_never_waits_for_the_probe(monkeypatch):
    release, calls = threading.Event(), []

    def slow_check(config, *args, **kwargs):
        calls.append(config.python)
        release.wait(30)
        raise dependencies.DependencyError("the style engine stopped unexpectedly: No module named 'torch'")

    monkeypatch.setattr(dependencies, "check", slow_check)
    dependencies.forget_probes()
    try:
        start = time.monotonic()
        first = draw_preferences()
        second = draw_preferences()
        assert time.monotonic() - start < 1.0  # the check is still running: drawing did not wait for it
        assert calls == [sys.executable]  # probed once, on a thread, however often the panel draws
        assert "checking the worker's Python..." in first.names("label") + second.names("label")
        assert "Using Blender's Python" not in second.names("label")
    finally:
        release.set()
    wait_for_probe()
    assert "the style engine stopped unexpectedly: No module named 'torch'" in draw_preferences().names("label")
    dependencies.forget_probes()


def test_a_running_install_shows_its_progress_and_cancel(monkeypatch):
    install = SimpleNamespace(finished=False, error=None, status=dependencies.InstallStatus("collecting torch (1 packages)", 0.1))
    monkeypatch.setattr(preferences, "installing", install)
    layout = draw_preferences()
    assert "Installing: collecting torch (1 packages)" in layout.names("label")
    assert layout.names("operator") == ["neural_style.install_dependencies_cancel"]
    assert not bpy.ops.neural_style.install_dependencies.poll()
    install.finished, install.error = True, "pip failed (exit code 1): No matching distribution found for torch==9"
    layout = draw_preferences()
    assert layout.names("operator") == ["neural_style.install_dependencies"]
    assert "Last install failed: pip failed (exit code 1): No matching distribution found for torch==9" in layout.names("label")


def test_add_style_opens_an_image_file_browser(scene):
    opened = []
    context = SimpleNamespace(window_manager=SimpleNamespace(fileselect_add=opened.append))
    operator = SimpleNamespace()
    assert operators.IMAGE_OT_neural_style_style_add.invoke(operator, context, None) == {"RUNNING_MODAL"}
    assert opened == [operator]
    properties = bpy.ops.image.neural_style_style_add.get_rna_type().properties
    assert properties["filter_image"].default and properties["filter_folder"].default
    assert {"filepath", "directory", "files", "relative_path"} <= set(properties.keys())


def test_add_style_takes_every_file_picked(scene, tmp_path):
    settings = scene.neural_style
    bpy.ops.image.neural_style_style_add(directory=str(tmp_path), files=[{"name": "a.png"}, {"name": "b.jpg"}])
    assert [s.filepath for s in settings.styles] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert settings.active_style == 1


def test_style_weight_field_has_a_label(scene):
    item = scene.neural_style.styles.add()
    layout = Layout()
    panels.NEURAL_STYLE_UL_styles.draw_item(None, None, layout, None, item, 0, None, "")
    assert layout.kwargs[("prop", "weight")]["text"] == "Weight"


def test_animation_label_counts_frames_with_the_frame_step(scene):
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 10, 3
    labels = draw(panels.IMAGE_PT_neural_style_animation, scene).names("label")
    assert "4 frames (1-10, every 3) from renders" in labels  # frames 1, 4, 7, 10
    scene.frame_step = 1
    assert "10 frames (1-10) from renders" in draw(panels.IMAGE_PT_neural_style_animation, scene).names("label")


def test_fast_mode_hides_the_temporal_weight_and_explains_blend_zero(scene):
    settings = scene.neural_style
    settings.animation_mode, settings.temporal = "FAST", True
    assert settings.fast_blend == 0.5 and settings.temporal_blend == 0.0  # fast mode blends unless told not to
    settings.fast_blend = 0.0
    layout = draw(panels.IMAGE_PT_neural_style_animation, scene)
    assert "temporal_weight" not in layout.names("prop") and "fast_blend" in layout.names("prop")
    assert "temporal_blend" not in layout.names("prop")
    assert "Fast mode links frames only by Blend: raise it above 0" in layout.names("label")
    settings.fast_blend = 0.5
    assert not [text for text in draw(panels.IMAGE_PT_neural_style_animation, scene).names("label") if "Blend" in text]
    settings.animation_mode = "OPTIMIZE"
    assert "temporal_weight" in draw(panels.IMAGE_PT_neural_style_animation, scene).names("prop")


def test_cost_estimate_before_and_after_a_measured_run(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(preferences, "user_dir", lambda: str(tmp_path))
    settings = scene.neural_style
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 1920, 1080, 100
    settings.quality = "STANDARD"  # 768 px, 300 iterations
    labels = draw(panels.IMAGE_PT_neural_style, scene).names("label")
    assert "Cost: 300 iterations at 768x432 px" in labels
    assert "Time: known after the first run on this device" in labels
    # A run measured 0.1 s per iteration at 384x216: four times the pixels take four times as long.
    timings.record({"device": "auto", "model": "vgg16", "iterations": 100}, {"shape": [216, 384, 4], "elapsed": 10.0})
    labels = draw(panels.IMAGE_PT_neural_style, scene).names("label")
    assert "Time: about 2 min on this machine" in labels  # 300 x 0.4 s
    scene.frame_start, scene.frame_end = 1, 10
    labels = draw(panels.IMAGE_PT_neural_style_animation, scene).names("label")
    assert "Cost: 10 frames x 300 iterations at 768x432 px" in labels and "Time: about 20 min on this machine" in labels


def test_fast_mode_cost_is_the_training_measured_once(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(preferences, "user_dir", lambda: str(tmp_path))
    settings = scene.neural_style
    settings.animation_mode, settings.fast_steps = "FAST", 300
    scene.frame_start, scene.frame_end = 1, 5
    labels = draw(panels.IMAGE_PT_neural_style_animation, scene).names("label")
    assert "Cost: training 300 steps once per style and settings, then 5 frames" in labels
    assert "Time: known after the first training on this device" in labels
    # The engine's record of a finished training: 100 steps took 60 s.
    model = tmp_path / "fast-abc.onnx"
    (tmp_path / "fast-abc.json").write_text(json.dumps(
        {"fast": {"steps": 100, "crop": 256, "batch_size": 2}, "train_seconds": 60.0}))
    timings.record_training({"device": "auto", "model": "vgg16"}, str(model))
    labels = draw(panels.IMAGE_PT_neural_style_animation, scene).names("label")
    assert "Time: training about 3 min on this machine" in labels  # 300 steps x 0.6 s


def test_every_finished_stylize_request_is_measured(tmp_path):
    options = {"device": "cpu", "model": "vgg16", "iterations": 50}
    timings.record(options, {"shape": [100, 200, 3], "elapsed": 5.0}, str(tmp_path))
    assert timings.load(str(tmp_path)) == {"cpu/vgg16": {"20000": 0.1}}
    assert timings.seconds_per_iteration(options, 40000, str(tmp_path)) == pytest.approx(0.2)
    assert timings.seconds_per_iteration({**options, "model": "nin"}, 40000, str(tmp_path)) is None
    timings.record(options, {"shape": [100, 200, 3]}, str(tmp_path))  # no time: nothing recorded, no error
    assert timings.describe(30) == "about 30 s" and timings.describe(600) == "about 10 min"
