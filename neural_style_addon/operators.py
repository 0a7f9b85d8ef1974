"""Operators: thin wrappers that build a job from the panel's settings and drive its task.

`execute` runs the task to the end (background mode, scripts, render farms);
`invoke` (a button click in the UI) runs it as a modal operator on a timer:
progress bar, status text, live preview, Esc cancels.
"""

from __future__ import annotations

import os
import time

import bpy
from bpy.props import BoolProperty, CollectionProperty, StringProperty  # Add Style's file browser

from . import api, os_rules, preferences, tasks
from .errors import StyleError
from .runner import Task

# Seconds between modal timer ticks, and the longest a tick may spend on worker events.
TICK = 0.1
TICK_BUDGET = 0.05

# The one task running in this Blender session (the panel shows it and offers Cancel).
running: Task | None = None

# Sources whose Stylize run is not one image, by Source value: (start(operator, context) -> Task | None,
# done_message(task) -> str).  The modules that own them fill it in when they register (material_textures:
# "MATERIAL"), so this module does not import them.
SOURCE_RUNS: dict = {}


def _editor_image(context) -> bpy.types.Image | None:
    space = getattr(context, "space_data", None)
    return space.image if space is not None and space.type == "IMAGE_EDITOR" else None


def _image_editor_area(context):
    if context.area is not None and context.area.type == "IMAGE_EDITOR":
        return context.area
    screen = context.screen
    return next((area for area in screen.areas if area.type == "IMAGE_EDITOR"), None) if screen else None


class _TaskOperator:
    """Shared run logic; subclasses say how to build the job and which steps to run."""

    bl_options = {"REGISTER", "UNDO"}
    steps = None
    animation = False

    @classmethod
    def poll(cls, context):
        return running is None and context.scene is not None

    def start(self, context) -> Task | None:
        """Check the settings and start the task; None (after reporting) when they are not usable."""
        global running
        settings = context.scene.neural_style
        fields = {}
        if settings.source == "IMAGE" and settings.source_image is None:
            fields["image"] = _editor_image(context)
        try:
            job = api.build_job(context.scene, context=context, animation=self.animation, **fields)
            running = api.start(job, type(self).steps, context)
        except StyleError as exc:
            self.report({"ERROR"}, f"Neural Style: {exc}")
            return None
        return running

    def done_message(self, task: Task) -> str:
        raise NotImplementedError

    def finish(self, context, task: Task) -> set[str]:
        """Report the task's outcome the Blender way; returns the operator result."""
        global running
        running = None
        if task.cancelled:
            self.report({"WARNING"}, "Neural Style: cancelled")
            return {"CANCELLED"}
        if task.error:
            self.report({"ERROR"}, f"Neural Style: {task.error}")
            return {"CANCELLED"}
        self.report({"INFO"}, self.done_message(task))
        return {"FINISHED"}

    def execute(self, context):
        task = self.start(context)
        if task is None:
            return {"CANCELLED"}
        try:
            while task.step():
                pass
        except BaseException:  # KeyboardInterrupt in a script: the worker's job ends with the operator
            stop_running()
            raise
        return self.finish(context, task)

    def invoke(self, context, event):
        return self.execute(context) if bpy.app.background else self.start_modal(context)

    def start_modal(self, context):
        task = self.start(context)
        if task is None:
            return {"CANCELLED"}
        task.wait = 0.0
        self._task = task
        self._area = _image_editor_area(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TICK, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        task = self._task
        if event.type == "ESC" and event.value == "PRESS":
            task.cancel()  # the worker answers "cancelled"; the task then cleans up and ends
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        deadline = time.monotonic() + TICK_BUDGET
        while task.step() and not task.idle and time.monotonic() < deadline:
            pass
        self.show(context, task)
        if not task.finished:
            return {"RUNNING_MODAL"}
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        return self.finish(context, task)

    def show(self, context, task: Task) -> None:
        context.window_manager.progress_update(int(task.status.fraction * 100))
        context.workspace.status_text_set(f"Neural Style: {task.status.text} (Esc to cancel)")
        if self._area is not None:
            if task.image is not None and self._area.spaces.active.image != task.image:
                self._area.spaces.active.image = task.image
            self._area.tag_redraw()

    def cancel(self, context):
        """Blender is closing the operator (file load, quit): stop the job, keep the data clean."""
        global running
        self._task.close()
        running = None


class IMAGE_OT_neural_style_apply(_TaskOperator, bpy.types.Operator):
    """Stylize the source with the chosen style images (Active Material: its ticked textures, in place)"""

    bl_idname = "image.neural_style_apply"
    bl_label = "Stylize"
    steps = tasks.stylize_image_steps

    def start(self, context) -> Task | None:
        run = SOURCE_RUNS.get(context.scene.neural_style.source)
        self._done_message = run[1] if run else None
        return run[0](self, context) if run else super().start(context)

    def done_message(self, task):
        message = getattr(self, "_done_message", None)  # set by `start`, which a caller may have skipped
        if message is not None:
            return message(task)
        return f"Neural Style: created '{task.result.name}'"


class IMAGE_OT_neural_style_animation(_TaskOperator, bpy.types.Operator):
    """Stylize the scene's frame range into frame_####.png files; Existing Frames says which frames to keep"""

    bl_idname = "image.neural_style_animation"
    bl_label = "Stylize Animation"
    steps = tasks.stylize_animation_steps
    animation = True

    def done_message(self, task):
        return f"Neural Style: {len(task.result)} frames in {os.path.dirname(task.result[0])}"


class IMAGE_OT_neural_style_cancel(bpy.types.Operator):
    """Stop the running style transfer"""

    bl_idname = "image.neural_style_cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return running is not None

    def execute(self, context):
        running.cancel()
        return {"FINISHED"}


# Add Style (file browser)
class IMAGE_OT_neural_style_style_add(bpy.types.Operator):
    """Add style images: a file browser picks one or more (from a script: `filepath`, or an empty slot)"""

    bl_idname = "image.neural_style_style_add"
    bl_label = "Add Style"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    # The file browser shows folders and images only, and offers "Relative Path" (to the .blend).
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    relative_path: BoolProperty(name="Relative Path", default=True, description="Store the path relative to the .blend file")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        settings = context.scene.neural_style
        names = [file.name for file in self.files if file.name]
        paths = [os.path.join(self.directory, name) for name in names] if names and self.directory else [self.filepath]
        for path in paths:
            item = settings.styles.add()
            relative = path and self.relative_path and bpy.data.filepath
            item.filepath = os_rules.blend_relative(path, os.path.dirname(bpy.data.filepath)) if relative else path
        settings.active_style = len(settings.styles) - 1
        return {"FINISHED"}


class IMAGE_OT_neural_style_style_remove(bpy.types.Operator):
    """Remove the selected style image slot"""

    bl_idname = "image.neural_style_style_remove"
    bl_label = "Remove Style"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.neural_style.styles) > 0

    def execute(self, context):
        settings = context.scene.neural_style
        settings.styles.remove(settings.active_style)
        settings.active_style = max(0, min(settings.active_style, len(settings.styles) - 1))
        return {"FINISHED"}


# Install Dependencies (the logic is dependencies.Install; preferences supplies Blender's side)
class NEURAL_STYLE_OT_install_dependencies(bpy.types.Operator):
    """Download the style engine's packages from PyPI (the tested versions) into the add-on's user folder, then check them"""

    bl_idname = "neural_style.install_dependencies"
    bl_label = "Install Dependencies"

    @classmethod
    def poll(cls, context):
        # Not while a job runs: the install replaces the packages its worker uses.
        return running is None and (preferences.installing is None or preferences.installing.finished)

    def execute(self, context):
        """Background mode and scripts: install and check to the end (pip's output goes to stdout)."""
        try:
            modules = preferences.install_dependencies(context).wait()
        except StyleError as exc:
            return self._failed(exc)
        return self._done(modules)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            self._install = preferences.install_dependencies(context)
        except StyleError as exc:
            return self._failed(exc)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        install = self._install
        if event.type == "ESC" and event.value == "PRESS":
            install.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        wm = context.window_manager
        wm.progress_update(int(install.status.fraction * 100))
        self._status(context, f"Neural Style: {install.status.text} (Esc to cancel)")
        for window in wm.windows:
            for area in window.screen.areas:
                if area.type == "PREFERENCES":
                    area.tag_redraw()
        if not install.finished:
            return {"RUNNING_MODAL"}
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        self._status(context, None)
        try:
            modules = install.wait()
        except StyleError as exc:
            return self._failed(exc)
        return self._done(modules)

    def cancel(self, context):
        """Blender is closing the operator (quit, file load): stop pip."""
        self._install.cancel()

    @staticmethod
    def _status(context, text) -> None:
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _failed(self, exc: StyleError) -> set[str]:
        self.report({"ERROR"}, f"Neural Style: Install Dependencies: {exc}")
        return {"CANCELLED"}

    def _done(self, modules: dict) -> set[str]:
        self.report({"INFO"}, f"Neural Style: {len(modules)} packages installed into {preferences.site_packages()} "
                              "and checked")
        return {"FINISHED"}


class NEURAL_STYLE_OT_install_dependencies_cancel(bpy.types.Operator):
    """Stop Install Dependencies (pip is stopped before it replaces the installed packages)"""

    bl_idname = "neural_style.install_dependencies_cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return preferences.installing is not None and not preferences.installing.finished

    def execute(self, context):
        preferences.installing.cancel()
        return {"FINISHED"}


classes = (
    IMAGE_OT_neural_style_apply,
    IMAGE_OT_neural_style_animation,
    IMAGE_OT_neural_style_cancel,
    IMAGE_OT_neural_style_style_add,
    IMAGE_OT_neural_style_style_remove,
    NEURAL_STYLE_OT_install_dependencies,
    NEURAL_STYLE_OT_install_dependencies_cancel,
)


def stop_running(*_args) -> None:
    """Unregister, a new file loading, Blender quitting: end the running task (its cleanup removes
    half-made results and stops the worker's job).  Takes (and ignores) a handler's arguments."""
    global running
    if running is not None:
        running.close()
        running = None
