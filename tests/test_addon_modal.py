"""The interactive (modal) path, driven by hand: Blender never runs modal operators headless.

The window manager, workspace and Image Editor area are recording stand-ins;
the scene, the task, the worker and the images are real.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import addon_support as support
import bpy
from addon_support import plumbing_scene, style  # noqa: F401 - fixtures
import pytest

from neural_style_addon import operators, tasks


class WindowManager:
    def __init__(self):
        self.progress = []
        self.timers = 0

    def event_timer_add(self, step, window=None):
        self.timers += 1
        return object()

    def event_timer_remove(self, timer):
        self.timers -= 1

    def modal_handler_add(self, operator):
        pass

    def progress_begin(self, low, high):
        self.progress.append("begin")

    def progress_update(self, value):
        self.progress.append(value)

    def progress_end(self):
        self.progress.append("end")


class Operator(operators._TaskOperator):
    """The apply operator's logic on a plain object (a registered Operator cannot be instantiated)."""

    steps = tasks.stylize_image_steps
    done_message = operators.IMAGE_OT_neural_style_apply.done_message

    def __init__(self):
        self.reports = []

    def report(self, kind, message):
        self.reports.append((kind.pop(), message))


def fake_context(scene):
    space = SimpleNamespace(type="IMAGE_EDITOR", image=None)
    area = SimpleNamespace(type="IMAGE_EDITOR", spaces=SimpleNamespace(active=space), redraws=0)
    area.tag_redraw = lambda: setattr(area, "redraws", area.redraws + 1)
    status = []
    return SimpleNamespace(
        scene=scene, view_layer=bpy.context.view_layer, preferences=bpy.context.preferences, window=None, screen=None, area=area, space_data=space,
        window_manager=WindowManager(), workspace=SimpleNamespace(status_text_set=status.append), status=status,
    )


def run_modal(op, context, escape_after_progress=False, limit=120.0):
    """Send timer events (and optionally Esc) until the operator leaves modal mode."""
    assert op.start_modal(context) == {"RUNNING_MODAL"}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if escape_after_progress and any(text and "iteration" in text for text in context.status):
            assert op.modal(context, SimpleNamespace(type="ESC", value="PRESS")) == {"RUNNING_MODAL"}
            escape_after_progress = False
        result = op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING"))
        if result != {"RUNNING_MODAL"}:
            return result
        time.sleep(0.02)
    pytest.fail("the modal operator did not finish")


@pytest.fixture()
def scene(plumbing_scene):
    plumbing_scene.neural_style.preview_every = 1
    return plumbing_scene


def test_modal_run_shows_progress_status_and_the_result_in_the_editor(scene):
    op, context = Operator(), fake_context(scene)
    assert run_modal(op, context) == {"FINISHED"}
    assert op.reports == [("INFO", "Neural Style: created 'Render (waves)'")]
    assert context.area.spaces.active.image == bpy.data.images["Render (waves)"]
    progress = context.window_manager.progress
    assert progress[0] == "begin" and progress[-1] == "end" and 100 in progress
    assert any("iteration" in text for text in context.status if text) and context.status[-1] is None
    assert context.area.redraws > 0 and context.window_manager.timers == 0
    assert operators.running is None


def test_escape_cancels_and_removes_the_preview_image(scene):
    scene.neural_style.iterations = 5000
    names = support.image_names()
    op, context = Operator(), fake_context(scene)
    assert run_modal(op, context, escape_after_progress=True) == {"CANCELLED"}
    assert op.reports == [("WARNING", "Neural Style: cancelled")]
    assert support.image_names() == names and operators.running is None


def test_bad_settings_are_reported_without_entering_modal(scene):
    scene.neural_style.styles[0].filepath = "/nonexistent/style.png"
    op, context = Operator(), fake_context(scene)
    assert op.start_modal(context) == {"CANCELLED"}
    assert op.reports == [("ERROR", "Neural Style: style image not found: /nonexistent/style.png")]
    assert context.window_manager.timers == 0
