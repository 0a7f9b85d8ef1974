"""Settings that belong to a scene (saved with the .blend): `scene.neural_style`."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

# Paths may be "//"-relative to the .blend; Blender 4.5+ wants that declared (older ones reject the flag).
PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()

# Quality preset -> (processing size: longest side in pixels, 0 = the source's own; iterations).
QUALITY_PRESETS = {
    "DRAFT": (384, 100),
    "STANDARD": (768, 300),
    "HIGH": (0, 500),
}
QUALITY_ITEMS = (*QUALITY_PRESETS, "CUSTOM")

# engine.StyleOptions.device values.
DEVICE_ITEMS = (
    ("auto", "Auto", "GPU when there is one, else CPU"),
    ("cpu", "CPU", ""),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("mps", "Metal", "Apple GPU"),
)


def _apply_preset(self, _context) -> None:
    if self.quality in QUALITY_PRESETS:
        # Item assignment skips the size/iterations update callbacks, which would flip the preset to Custom.
        self["size"], self["iterations"] = QUALITY_PRESETS[self.quality]


def _mark_custom(self, _context) -> None:
    if QUALITY_PRESETS.get(self.quality) != (self.size, self.iterations):
        self["quality"] = QUALITY_ITEMS.index("CUSTOM")  # stored as the item's index; skips _apply_preset


class NeuralStyleStyleItem(bpy.types.PropertyGroup):
    """One style image and its share of the blend."""

    kind: EnumProperty(
        name="From",
        items=(("FILE", "File", "An image file on disk"), ("IMAGE", "Image", "An image datablock in this file")),
        default="FILE",
    )
    filepath: StringProperty(name="Style File", subtype="FILE_PATH", options=PATH_OPTIONS)
    image: PointerProperty(name="Style Image", type=bpy.types.Image)
    weight: FloatProperty(name="Weight", description="Share of this style in the blend", default=1.0, min=0.0, soft_max=1.0)
    # Spatial control (neural_style_addon/mattes.py): masks from the render's Cryptomatte passes.
    limit: EnumProperty(
        name="Limit To",
        description="Where this style applies; pixels no limited style covers take the unlimited styles "
                    "(or stay as rendered when every style is limited)",
        items=(
            ("EVERYWHERE", "Everywhere", "The whole picture (or what no limited style covers)"),
            ("OBJECT", "Object", "Only where this object is seen"),
            ("COLLECTION", "Collection", "Only where the objects of this collection are seen"),
            ("MATERIAL", "Material", "Only where this material is seen"),
        ),
        default="EVERYWHERE",
    )
    limit_object: PointerProperty(name="Object", type=bpy.types.Object)
    limit_collection: PointerProperty(name="Collection", type=bpy.types.Collection)
    limit_material: PointerProperty(name="Material", type=bpy.types.Material)


class NeuralStyleSettings(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source",
        items=(
            ("RENDER", "Render Result", "The last render of this scene"),
            ("IMAGE", "Image", "An image datablock (default: the image shown in the Image Editor)"),
            ("SEQUENCE", "Image Sequence", "A folder of rendered frames"),
            ("MATERIAL", "Active Material",
             "The ticked image textures of the active object's active material, each replaced in its node by "
             "its stylized copy (neural_style_addon/material_textures.py)"),
        ),
        default="RENDER",
    )
    source_image: PointerProperty(name="Image", type=bpy.types.Image)
    sequence_dir: StringProperty(name="Frames Folder", subtype="DIR_PATH", options=PATH_OPTIONS,
                                description="Folder of rendered frames, numbered by frame")

    styles: CollectionProperty(type=NeuralStyleStyleItem)
    active_style: IntProperty(name="Active Style", default=0)

    strength: FloatProperty(
        name="Strength", description="How strongly the style is imposed (scales the style loss)",
        default=1.0, min=0.0, soft_min=0.05, soft_max=4.0, max=100.0,
    )
    model: EnumProperty(
        name="Model",
        items=(
            ("vgg16", "VGG-16", "Offline packaged weights; the default"),
            ("vgg19", "VGG-19", "Classic Gatys network; weights are downloaded once"),
            ("nin", "NIN", "Network-in-Network: small and fast; weights are downloaded once"),
        ),
        default="vgg16",
    )
    quality: EnumProperty(
        name="Quality",
        items=(
            ("DRAFT", "Draft", "Up to 384 px, 100 iterations"),
            ("STANDARD", "Standard", "Up to 768 px, 300 iterations"),
            ("HIGH", "High", "Full source size, 500 iterations"),
            ("CUSTOM", "Custom", "Size and iterations from the Advanced panel"),
        ),
        default="STANDARD",
        update=_apply_preset,
    )
    size: IntProperty(
        name="Size", description="Longest side processed, in pixels (0: the source's size); the result keeps the source's size",
        default=QUALITY_PRESETS["STANDARD"][0], min=0, max=8192, update=_mark_custom,
    )
    iterations: IntProperty(
        name="Iterations", default=QUALITY_PRESETS["STANDARD"][1], min=1, max=5000, update=_mark_custom,
    )
    optimizer: EnumProperty(
        name="Optimizer",
        items=(("lbfgs", "L-BFGS", "Best quality per iteration"), ("adam", "Adam", "Less memory, smoother progress")),
        default="lbfgs",
    )
    style_scale: FloatProperty(name="Style Scale", description="Style image size relative to the output", default=1.0, min=0.05, max=4.0)
    weights: StringProperty(
        name="Weights", subtype="FILE_PATH", options=PATH_OPTIONS,
        description="Network weights: empty for the model's default, or a .pth/.onnx file",
    )
    seed: IntProperty(name="Seed", description="Random seed (-1: different each run)", default=-1, min=-1)
    preview_every: IntProperty(name="Preview Every", description="Update the preview every N iterations (0: never)", default=10, min=0)
    depth_scale: FloatProperty(
        name="Far Stroke Size",
        description="Style scale at the farthest depth relative to the nearest, from the render's Depth pass: "
                    "strokes get finer with distance (1: the same size everywhere)",
        default=1.0, min=0.05, max=1.0,
    )
    preserve_colors: BoolProperty(name="Preserve Colours", description="Keep the source's colours, take only the style's texture")
    device: EnumProperty(
        name="Device",
        items=(("DEFAULT", "Preferences", "The device set in the add-on preferences"), *DEVICE_ITEMS),
        default="DEFAULT",
    )

    target: EnumProperty(
        name="Output",
        items=(
            ("IMAGE", "New Image", "A new image named after source and style"),
            ("FILE", "File", "A new image saved to a file"),
            ("TEXTURE", "Material Texture", "Base Color texture on the active object's material"),
        ),
        default="IMAGE",
    )
    output_path: StringProperty(name="Output File", subtype="FILE_PATH", default="//stylized.png", options=PATH_OPTIONS)

    animation_dir: StringProperty(name="Frames Output", subtype="DIR_PATH", default="//stylized/", options=PATH_OPTIONS)
    load_sequence: BoolProperty(name="Load as Image Sequence", default=True)
    add_strip: BoolProperty(
        name="Add Sequencer Strip", default=False,
        description="Show the frames as an image strip in the scene '<Scene> Stylized' (this scene keeps rendering its 3D view)",
    )
    # What a rerun does with frames already in the output folder.
    existing_frames: EnumProperty(
        name="Existing Frames", default="RESUME",
        items=(
            ("RESUME", "Resume", "Keep frames this add-on made with the same styles and settings; stylize the others"),
            ("OVERWRITE", "Overwrite", "Stylize every frame again"),
        ),
    )
    animation_mode: EnumProperty(
        name="Mode", default="OPTIMIZE",
        items=(
            ("OPTIMIZE", "Optimize (best)", "Optimize every frame on its own: best looks, slow"),
            ("FAST", "Fast (trained)", "Train a network once per style, then apply it to each frame in a moment"),
        ),
    )
    fast_steps: IntProperty(
        name="Training Steps", description="Training steps of the fast-mode network (trained once per style and settings)",
        default=300, min=1, soft_max=5000,  # engine.fast_options.FastOptions.steps' default
    )
    temporal: BoolProperty(
        name="Temporal Coherence", default=True,
        description="Tie each frame to the previous stylized frame along the motion (less flicker)",
    )
    temporal_weight: FloatProperty(
        name="Temporal Weight", description="How strongly a frame keeps the previous frame's strokes, relative to the style",
        default=20.0, min=0.0, soft_max=100.0,  # engine.temporal.TemporalOptions.weight's default
    )
    temporal_blend: FloatProperty(
        name="Blend", description="Mix this share of the previous frame, moved along the motion, into the result (0: off)",
        default=0.0, min=0.0, max=1.0, subtype="FACTOR",
    )
    fast_blend: FloatProperty(
        name="Blend", description="Fast mode: mix this share of the previous frame, moved along the motion, into the "
        "result (0: off); a trained network does not optimise, so this is what ties its frames together",
        default=0.5, min=0.0, max=1.0, subtype="FACTOR",  # engine.fast.options.SEQUENCE_BLEND's value
    )


classes = (NeuralStyleStyleItem, NeuralStyleSettings)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.neural_style = PointerProperty(type=NeuralStyleSettings)


def unregister() -> None:
    del bpy.types.Scene.neural_style
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
