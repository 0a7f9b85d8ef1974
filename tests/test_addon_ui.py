"""Panels, the style list and preferences drawn against a recording layout (Panel.draw never runs headless)."""

from __future__ import annotations

from types import SimpleNamespace

import addon_support as support
import bpy
import pytest

from neural_style_addon import job, operators, panels, preferences


class Layout:
    """Records what a draw function asks for; rows and columns record into the same list."""

    def __init__(self, calls=None):
        self.calls = calls if calls is not None else []
        self.use_property_split = False

    def _child(self, *args, **kwargs):
        return Layout(self.calls)

    row = column = box = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"no property {name!r} on {data}"
        self.calls.append(("prop", name))

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
    panel_cls.draw(SimpleNamespace(layout=layout), SimpleNamespace(scene=scene))
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
        "size", "iterations", "optimizer", "style_scale", "weights", "seed", "preview_every"]
    animation = draw(panels.IMAGE_PT_neural_style_animation, scene)
    assert animation.names("prop") == [
        "animation_dir", "load_sequence", "add_strip", "animation_mode", "fast_steps", "temporal", "temporal_weight", "temporal_blend"]
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


def test_preferences_draw_offers_python_device_cache_and_install(monkeypatch):
    layout = Layout()
    prefs = SimpleNamespace(layout=layout, python_path="", device="auto", cache_dir="",
                            bl_rna=preferences.NeuralStylePreferences.bl_rna)
    preferences.NeuralStylePreferences.draw(prefs, bpy.context)
    assert layout.names("prop") == ["python_path", "device", "cache_dir"]
    assert layout.names("operator") == ["neural_style.install_dependencies"]
    assert "Using Blender's Python" in layout.names("label")
