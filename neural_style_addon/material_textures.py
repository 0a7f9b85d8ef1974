"""Stylizing a material's own image textures in place (source "Active Material").

The main panel's Source menu entry "Active Material" lists the active object's
active material's Image Texture nodes (`draw_source`); the artist ticks which
to stylize (by default the colour textures that feed Base Color) and presses
Stylize.  Textures holding data rather than colour (Non-Color: roughness,
normal, metallic, ...) are listed greyed out and always refused.  Each ticked
texture goes through the worker like any image (a UDIM tile by tile), and the
result becomes a NEW image in the SAME node (a UDIM gives a UDIM with the same
tiles), so the node's links, mapping, interpolation, extension and colour space
stay as they were.  The original image is kept in the file (fake user) and
`restore` (or Undo) puts it back.  Reading the tiles and writing the results
(packed, or beside the saved .blend) is `texture_files`.

A texture whose node repeats (extension REPEAT) is stylized seamlessly
(`engine.StyleOptions.seamless`), unless the artist unticks Seamless; a UDIM's
tiles are not (they meet their neighbours, not themselves) unless ticked.
Stroke size follows the surface's real size (`texture_scale`), so a 4K and a
1K texture of the same surface get the same style_scale.  Nothing here
imports torch.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass

import bpy
import numpy as np
from bpy.props import BoolProperty

from . import api, image_bridge, operators, tasks, texture_files, texture_scale
from .errors import StyleError
from .job import Job, Status
from .runner import Task

ORIGINAL = "neural_style_original"  # node custom properties: the original image's name ...
ORIGINAL_FAKE_USER = "neural_style_original_fake_user"  # ... and its fake-user flag before
NON_COLOR = "Non-Color"


@dataclass
class Texture:
    """One Image Texture node of the material, as the list shows it."""

    node: bpy.types.Node
    image: bpy.types.Image | None
    colorspace: str
    is_data: bool
    base_color: bool  # feeds the Principled BSDF's Base Color (through any nodes)

    @property
    def name(self) -> str:
        return self.node.name

    def refusal(self) -> str | None:
        """Why this texture cannot be stylized, or None."""
        if self.image is None:
            return f"the node '{self.name}' has no image"
        if self.is_data:
            return f"'{self.image.name}' holds data ({self.colorspace}), not colour, so it is never stylized"
        if self.image.source == "TILED":
            return texture_files.tile_refusal(self.image)
        if self.image.source in ("SEQUENCE", "MOVIE"):
            return f"'{self.image.name}' is a {self.image.source.lower()}; only still images are stylized"
        return None


def is_data(image: bpy.types.Image | None) -> bool:
    return image is not None and (image.colorspace_settings.is_data or image.colorspace_settings.name == NON_COLOR)


def _feeds_base_color(node: bpy.types.Node) -> bool:
    """Whether `node`'s output reaches a Principled BSDF's Base Color input (searching downstream)."""
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for output in current.outputs:
            for link in output.links:
                if link.to_node.type == "BSDF_PRINCIPLED":
                    if link.to_socket.identifier == "Base Color":
                        return True
                else:
                    todo.append(link.to_node)
    return False


def active_material(obj: bpy.types.Object | None) -> bpy.types.Material:
    if obj is None:
        raise StyleError("the Active Material source needs an active object: select one first")
    material = getattr(obj, "active_material", None)
    if material is None or not material.node_tree:
        raise StyleError(f"the active object '{obj.name}' has no active material with nodes")
    return material


def textures(material: bpy.types.Material) -> list[Texture]:
    """The material's Image Texture nodes, in the node tree's order."""
    found = []
    for node in material.node_tree.nodes:
        if node.type == "TEX_IMAGE":
            image = node.image
            space = image.colorspace_settings.name if image is not None else ""
            found.append(Texture(node, image, space, is_data(image), _feeds_base_color(node)))
    return found


def default_pick(texture: Texture) -> bool:
    """Ticked unless the artist says otherwise: colour (sRGB) textures that feed Base Color."""
    return texture.refusal() is None and texture.base_color and texture.colorspace == "sRGB"


# Per-node settings, stored on the node only once the artist changes them (so the defaults follow the node).
def _get_pick(node) -> bool:
    if "neural_style_pick" in node:
        return bool(node["neural_style_pick"])
    image = node.image
    texture = Texture(node, image, image.colorspace_settings.name if image else "", is_data(image),
                      _feeds_base_color(node))
    return default_pick(texture)


def _set_pick(node, value: bool) -> None:
    node["neural_style_pick"] = bool(value)


def _get_seamless(node) -> bool:
    """Default: on when the node repeats, but never for a UDIM, whose tiles meet their neighbours in UV
    space (not themselves): each tile is stylized on its own, as a plain image."""
    if "neural_style_seamless" in node:
        return bool(node["neural_style_seamless"])
    return node.extension == "REPEAT" and not (node.image is not None and node.image.source == "TILED")


def _set_seamless(node, value: bool) -> None:
    node["neural_style_seamless"] = bool(value)


def picked(material: bpy.types.Material, names: list[str] | None = None) -> list[Texture]:
    """The textures to stylize: the named nodes, else the ticked ones; refused ones raise `StyleError`."""
    listed = textures(material)
    if names is not None:
        by_name = {t.name: t for t in listed}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise StyleError(f"the material '{material.name}' has no Image Texture node {missing[0]!r}")
        chosen = [by_name[name] for name in names]
    else:
        chosen = [t for t in listed if t.refusal() is None and t.node.neural_style_pick]
    for texture in chosen:
        reason = texture.refusal()
        if reason:
            raise StyleError(reason)
    if not chosen:
        raise StyleError(f"no colour texture of the material '{material.name}' is ticked for stylizing")
    return chosen


def periodic_fit(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """`tasks.fit_to_source` for a texture that repeats: resized as a torus (a 3x3 tiled copy's centre)."""
    height, width = source.shape[:2]
    if result.shape[:2] == (height, width):
        return tasks.fit_to_source(result, source)
    tiled = np.tile(result[..., :3], (3, 3, 1))
    rgb = image_bridge.resize(tiled, 3 * height, 3 * width)[height : 2 * height, width : 2 * width]
    return np.concatenate([rgb, source[..., 3:]], axis=2)

def put_in_node(node: bpy.types.Node, image: bpy.types.Image) -> None:
    """The node shows `image`; its first original is remembered and kept in the file for `restore`."""
    if ORIGINAL not in node:
        original = node.image
        node[ORIGINAL] = original.name
        node[ORIGINAL_FAKE_USER] = original.use_fake_user
        original.use_fake_user = True  # kept in the .blend although no node uses it now
    node.image = image


def restore(material: bpy.types.Material) -> int:
    """Put every stylized texture's original image back in its node; returns how many were restored."""
    count = 0
    for node in material.node_tree.nodes:
        if node.type != "TEX_IMAGE" or ORIGINAL not in node:
            continue
        original = bpy.data.images.get(node[ORIGINAL])
        if original is None:
            raise StyleError(f"the original image '{node[ORIGINAL]}' of the node '{node.name}' is gone")
        original.use_fake_user = bool(node[ORIGINAL_FAKE_USER])
        node.image = original
        del node[ORIGINAL], node[ORIGINAL_FAKE_USER]
        count += 1
    return count


def texture_options(job: Job, obj: bpy.types.Object, texture: Texture, seamless: bool | None,
                    tile: int | None = None) -> dict:
    seamless = texture.node.neural_style_seamless if seamless is None else seamless
    scale = texture_scale.texture_style_scale(job.options.get("style_scale", 1.0), obj, texture.image, tile,
                                              texture.node)
    options = {**job.options, "style_scale": scale, "seamless": bool(seamless)}
    if seamless and options.get("model") == "nin":
        raise StyleError("seamless textures need a VGG model: choose vgg16 or vgg19, or untick Seamless")
    return options


def stylize_textures_steps(task: Task, job: Job, names: list[str] | None = None, seamless: bool | None = None):
    """Stylize the material's picked textures (every tile of a UDIM); the material changes only once all
    results exist."""
    obj = job.obj
    material = active_material(obj)
    chosen = picked(material, names)
    made: list[tuple[bpy.types.Node, bpy.types.Image]] = []
    files: list[str] = []
    done = False
    try:
        with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
            style_paths = tasks.save_styles(job.styles, workdir)
            stylized = []
            for index, texture in enumerate(chosen):
                label = f"Texture {index + 1} of {len(chosen)}: "
                yield Status(f"{label}reading '{texture.image.name}'", index / len(chosen), label)
                tiles = texture_files.read_tiles(texture.image, workdir)
                results = []
                for part, (number, source) in enumerate(tiles):
                    tile_label = f"{label}tile {number}: " if number is not None else label
                    content = os.path.join(workdir, "content.npy")
                    np.save(content, source)
                    options = texture_options(job, obj, texture, seamless, number)
                    share = (index + part / len(tiles)) / len(chosen), 1 / (len(chosen) * len(tiles))
                    result = yield from tasks.run_on_worker(
                        task, content, style_paths, tasks.sized_options(options, source), workdir,
                        label=tile_label, share=share)
                    fit = periodic_fit(result, source) if options["seamless"] else tasks.fit_to_source(result, source)
                    results.append((number, fit))
                stylized.append(results)
            for texture, results in zip(chosen, stylized):
                image, written = texture_files.result_image(texture.image, results, tasks.style_label(job.styles),
                                                            workdir)
                made.append((texture.node, image))
                files += written
        for node, image in made:
            put_in_node(node, image)
        done = True
        return [image for _, image in made]
    finally:
        if not done:
            for _, image in made:
                try:
                    bpy.data.images.remove(image)
                except ReferenceError:
                    pass
            for file in files:
                if os.path.exists(file):
                    os.remove(file)


def build_job(scene, styles=None, options=None, context=None) -> Job:
    """A checked job for the active object's material (the panel's settings, `styles`/`options` overriding)."""
    context = context or bpy.context
    job = api.build_job(scene, styles, options, context=context, source="MATERIAL", target="MATERIAL")
    active_material(job.obj)
    return job


def stylize_textures(styles=None, *, obj=None, nodes: list[str] | None = None, seamless: bool | None = None,
                     scene=None, options=None) -> list[bpy.types.Image]:
    """Stylize the Image Texture nodes `nodes` (default: the ticked ones) of `obj`'s (default: the active
    object's) active material in place; returns the new images.  `seamless` None: per node (Repeat)."""
    scene = scene or bpy.context.scene
    job = build_job(scene, styles, options)
    if obj is not None:
        job.obj = obj
    picked(active_material(job.obj), nodes)  # refuse before any work
    steps = functools.partial(stylize_textures_steps, names=nodes, seamless=seamless)
    return api.start(job, steps).run()


def start_task(operator: bpy.types.Operator, context) -> Task | None:
    """Start stylizing the active material's ticked textures for `operator` (the Stylize button with the
    source "Active Material", or Stylize Material Textures); None, after reporting, when it cannot."""
    try:
        job = build_job(context.scene, context=context)
        picked(active_material(job.obj))  # refuse before any work
        operators.running = api.start(job, stylize_textures_steps, context)
    except StyleError as exc:
        operator.report({"ERROR"}, f"Neural Style: {exc}")
        return None
    return operators.running


def done_message(task: Task) -> str:
    return f"Neural Style: stylized {len(task.result)} texture(s); Restore Textures puts the originals back"


class NEURAL_STYLE_OT_material_textures(operators._TaskOperator, bpy.types.Operator):
    """Stylize the ticked image textures of the active object's active material, in place"""

    bl_idname = "image.neural_style_material_textures"
    bl_label = "Stylize Material Textures"

    def start(self, context) -> Task | None:
        return start_task(self, context)

    def done_message(self, task):
        return done_message(task)


class NEURAL_STYLE_OT_material_textures_restore(bpy.types.Operator):
    """Put the original images back in the active material's stylized texture nodes"""

    bl_idname = "image.neural_style_material_textures_restore"
    bl_label = "Restore Textures"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            count = restore(active_material(context.view_layer.objects.active))
        except StyleError as exc:
            self.report({"ERROR"}, f"Neural Style: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Neural Style: restored {count} texture(s)")
        return {"FINISHED"}


def draw_source(layout, context) -> None:
    """Under the main panel's Source menu when it is "Active Material": the material's Image Texture nodes as
    *node: image (colour space)*, each with its Stylize tick box and Seamless toggle (textures that cannot be
    stylized greyed out), and Restore Textures.  The panel's Stylize button stylizes the ticked ones."""
    try:
        material = active_material(context.view_layer.objects.active)
    except StyleError as exc:
        layout.label(text=str(exc), icon="INFO")
        return
    column = layout.column(align=True)
    column.use_property_split = False
    column.label(text=f"Material: {material.name}", icon="MATERIAL")
    listed = textures(material)
    if not listed:
        column.label(text="It has no Image Texture node", icon="INFO")
    for texture in listed:
        row = column.row(align=True)
        reason = texture.refusal()
        image = texture.image
        kind = f"UDIM, {len(image.tiles)} tiles, " if image is not None and image.source == "TILED" else ""
        name = f"{texture.name}: {image.name if image else '-'} ({kind}{texture.colorspace or '-'})"
        if reason:
            row.enabled = False
            row.label(text=name, icon="CANCEL")
            continue
        row.prop(texture.node, "neural_style_pick", text=name)
        row.prop(texture.node, "neural_style_seamless", text="", icon="MOD_ARRAY")
    column.operator(NEURAL_STYLE_OT_material_textures_restore.bl_idname, icon="LOOP_BACK")


classes = (NEURAL_STYLE_OT_material_textures, NEURAL_STYLE_OT_material_textures_restore)


def register() -> None:
    operators.SOURCE_RUNS["MATERIAL"] = (start_task, done_message)  # the Stylize button with this source
    bpy.types.ShaderNodeTexImage.neural_style_pick = BoolProperty(
        name="Stylize", description="Stylize this texture (default: colour textures feeding Base Color)",
        get=_get_pick, set=_set_pick)
    bpy.types.ShaderNodeTexImage.neural_style_seamless = BoolProperty(
        name="Seamless", description="Stylize so the texture still tiles (default: on when the node repeats)",
        get=_get_seamless, set=_set_seamless)


def unregister() -> None:
    operators.SOURCE_RUNS.pop("MATERIAL", None)
    del bpy.types.ShaderNodeTexImage.neural_style_pick
    del bpy.types.ShaderNodeTexImage.neural_style_seamless
