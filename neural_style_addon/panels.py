"""The Image Editor sidebar tab "Style": drawing only, every action is an operator."""

from __future__ import annotations

import bpy

from . import operators


class NEURAL_STYLE_UL_styles(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "kind", text="")
        row.prop(item, "image" if item.kind == "IMAGE" else "filepath", text="")
        row.prop(item, "weight", text="")


class _StylePanel:
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Style"


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

        layout.label(text="Style Images")
        row = layout.row()
        row.template_list("NEURAL_STYLE_UL_styles", "", settings, "styles", settings, "active_style", rows=2)
        buttons = row.column(align=True)
        buttons.operator("image.neural_style_style_add", icon="ADD", text="")
        buttons.operator("image.neural_style_style_remove", icon="REMOVE", text="")

        layout.prop(settings, "strength", slider=True)
        layout.prop(settings, "model")
        layout.prop(settings, "quality")
        layout.prop(settings, "preserve_colors")
        layout.prop(settings, "device")
        layout.prop(settings, "target")
        if settings.target == "FILE":
            layout.prop(settings, "output_path")

        task = operators.running
        if task is None:
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
        for name in ("size", "iterations", "optimizer", "style_scale", "weights", "seed", "preview_every"):
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
        layout.label(text=f"Frames {scene.frame_start}-{scene.frame_end}, from "
                          f"{'the frames folder' if settings.source == 'SEQUENCE' else 'renders'}")
        layout.prop(settings, "animation_dir")
        layout.prop(settings, "load_sequence")
        layout.prop(settings, "add_strip")
        layout.prop(settings, "animation_mode")
        row = layout.row()
        row.active = settings.animation_mode == "FAST"
        row.prop(settings, "fast_steps")
        layout.prop(settings, "temporal")
        column = layout.column()
        column.active = settings.temporal
        column.prop(settings, "temporal_weight")
        column.prop(settings, "temporal_blend", slider=True)
        layout.operator("image.neural_style_animation", icon="RENDER_ANIMATION")


classes = (NEURAL_STYLE_UL_styles, IMAGE_PT_neural_style, IMAGE_PT_neural_style_advanced, IMAGE_PT_neural_style_animation)
