"""The Image Editor sidebar tab "Style": drawing only, every action is an operator."""

from __future__ import annotations

import bpy

from . import api, material_textures, operators, timings


class NEURAL_STYLE_UL_styles(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "kind", text="")
        row.prop(item, "image" if item.kind == "IMAGE" else "filepath", text="")
        row.prop(item, "weight", text="Weight")


class _StylePanel:
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Style"


# Style slot "Limit To" value -> the slot's property holding the object, collection or material.
LIMIT_TARGETS = {"OBJECT": "limit_object", "COLLECTION": "limit_collection", "MATERIAL": "limit_material"}


def draw_limit(layout, settings) -> None:
    """The active style slot's "Limit To", and what happens to the pixels no limited slot covers."""
    if not 0 <= settings.active_style < len(settings.styles):
        return
    item = settings.styles[settings.active_style]
    layout.prop(item, "limit")
    if item.limit in LIMIT_TARGETS:
        layout.prop(item, LIMIT_TARGETS[item.limit])
    limits = [slot.limit != "EVERYWHERE" for slot in settings.styles]
    if any(limits):
        rest = "stay as rendered" if all(limits) else "take the unlimited styles"
        layout.label(text=f"Other pixels {rest} (masks from Cryptomatte)", icon="INFO")


def source_size(context, settings) -> tuple[int, int]:
    """The size of what will be stylized: the chosen image's, else the scene's render size."""
    image = settings.source_image if settings.source == "IMAGE" else None
    if image is None and settings.source == "IMAGE":
        image = operators._editor_image(context)  # the image the Image Editor shows
    if image is not None and image.size[0] and image.size[1]:
        return image.size[0], image.size[1]
    render = context.scene.render
    return (round(render.resolution_x * render.resolution_percentage / 100),
            round(render.resolution_y * render.resolution_percentage / 100))


def draw_cost(layout, context, settings, frames: int = 1) -> None:
    """What a run costs before it starts: iterations x size (x frames), and the time this machine needs for
    that once a run has measured it (see `timings`)."""
    width, height = timings.processing_size(*source_size(context, settings), settings.size)
    options = api.engine_options(settings, [], context)
    per_iteration = timings.seconds_per_iteration(options, width * height)
    runs = f"{frames} frames x " if frames > 1 else ""
    column = layout.column(align=True)
    column.label(text=f"Cost: {runs}{settings.iterations} iterations at {width}x{height} px", icon="TIME")
    if per_iteration is None:
        column.label(text="Time: known after the first run on this device")
    else:
        column.label(text=f"Time: {timings.describe(per_iteration * settings.iterations * frames)} on this machine")


def draw_training_cost(layout, context, settings, frames: int) -> None:
    """Fast mode's cost: one training (measured once, see `timings.record_training`), then a moment per frame."""
    seconds = timings.training_seconds(api.engine_options(settings, [], context), settings.fast_steps)
    column = layout.column(align=True)
    column.label(text=f"Cost: training {settings.fast_steps} steps once per style and settings, then {frames} "
                      "frames", icon="TIME")
    if seconds is None:
        column.label(text="Time: known after the first training on this device")
    else:
        column.label(text=f"Time: training {timings.describe(seconds)} on this machine")


def scene_frames(scene) -> range:
    return range(scene.frame_start, scene.frame_end + 1, scene.frame_step)


class IMAGE_PT_neural_style(_StylePanel, bpy.types.Panel):
    bl_label = "Neural Style"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        settings = context.scene.neural_style

        layout.prop(settings, "source")
        if settings.source == "IMAGE":
            layout.template_ID(settings, "source_image", open="image.open")
        elif settings.source == "SEQUENCE":
            layout.prop(settings, "sequence_dir")
        elif settings.source == "MATERIAL":
            material_textures.draw_source(layout, context)

        layout.label(text="Style Images")
        row = layout.row()
        row.template_list("NEURAL_STYLE_UL_styles", "", settings, "styles", settings, "active_style", rows=2)
        buttons = row.column(align=True)
        buttons.operator("image.neural_style_style_add", icon="ADD", text="")
        buttons.operator("image.neural_style_style_remove", icon="REMOVE", text="")
        draw_limit(layout, settings)

        layout.prop(settings, "strength", slider=True)
        layout.prop(settings, "model")
        layout.prop(settings, "quality")
        layout.prop(settings, "preserve_colors")
        layout.prop(settings, "device")
        if settings.source != "MATERIAL":  # Active Material: each result replaces its texture in the node
            layout.prop(settings, "target")
            if settings.target == "FILE":
                layout.prop(settings, "output_path")

        task = operators.running
        if task is None:
            draw_cost(layout, context, settings)
            layout.operator("image.neural_style_apply", icon="BRUSHES_ALL")
        else:
            layout.label(text=task.status.text, icon="TIME")
            layout.operator("image.neural_style_cancel", icon="CANCEL")


class IMAGE_PT_neural_style_advanced(_StylePanel, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "IMAGE_PT_neural_style"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        settings = context.scene.neural_style
        for name in ("size", "iterations", "optimizer", "style_scale", "depth_scale", "weights", "seed", "preview_every"):
            layout.prop(settings, name)


class IMAGE_PT_neural_style_animation(_StylePanel, bpy.types.Panel):
    bl_label = "Animation"
    bl_parent_id = "IMAGE_PT_neural_style"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        scene = context.scene
        settings = scene.neural_style
        frames = scene_frames(scene)
        step = f", every {scene.frame_step}" if scene.frame_step > 1 else ""
        layout.label(text=f"{len(frames)} frames ({scene.frame_start}-{scene.frame_end}{step}) from "
                          f"{'the frames folder' if settings.source == 'SEQUENCE' else 'renders'}")
        layout.prop(settings, "animation_dir")
        layout.prop(settings, "existing_frames", expand=True)
        layout.prop(settings, "load_sequence")
        layout.prop(settings, "add_strip")
        layout.prop(settings, "animation_mode")
        fast = settings.animation_mode == "FAST"
        row = layout.row()
        row.active = fast
        row.prop(settings, "fast_steps")
        layout.prop(settings, "temporal")
        column = layout.column()
        column.active = settings.temporal
        if fast:
            # A trained network does not optimise, so the temporal weight has nothing to act on:
            # in Fast mode frames are tied together only by blending in the previous one.
            column.prop(settings, "fast_blend", slider=True)
            if settings.temporal and settings.fast_blend == 0:
                column.label(text="Fast mode links frames only by Blend: raise it above 0", icon="INFO")
        else:
            column.prop(settings, "temporal_weight")
            column.prop(settings, "temporal_blend", slider=True)
        if operators.running is None:
            (draw_training_cost if fast else draw_cost)(layout, context, settings, len(frames))
        layout.operator("image.neural_style_animation", icon="RENDER_ANIMATION")


classes = (NEURAL_STYLE_UL_styles, IMAGE_PT_neural_style, IMAGE_PT_neural_style_advanced, IMAGE_PT_neural_style_animation)
