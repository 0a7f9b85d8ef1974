"""Stylizing a material's own image textures in place (source "Active Material").

The active object's active material lists its Image Texture nodes; the artist
ticks which to stylize (by default the colour textures that feed Base Color).
Textures holding data rather than colour (Non-Color: roughness, normal,
metallic, ...) are listed greyed out and always refused.  Each ticked texture
goes through the worker like any image, and the result becomes a NEW image in
the SAME node, so the node's links, mapping, interpolation, extension and
colour space stay as they were.  The original image is kept in the file (fake
user) and `restore` (or Undo) puts it back.  Results are packed into the .blend,
or, when the original is a file on disk and the .blend is saved, written
beside the .blend in `stylized_textures/` (never over an existing file).

A texture whose node repeats (extension REPEAT) is stylized seamlessly
(`engine.StyleOptions.seamless`), unless the artist unticks Seamless.  Stroke
size follows the surface's real size: `style_scale` for a texture is

    Style Scale x STYLE_WORLD_SIZE x texels_per_unit / longest texture side,
    texels_per_unit = sqrt(width x height x UV area / surface area)

(UV area summed over the mesh's faces in its active UV map, surface area in
world units with the object's scale), so a 4K and a 1K texture of the same
surface get the same style_scale, and the style covers the same part of the
object.  Nothing here imports torch.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from dataclasses import dataclass

import bpy
import numpy as np
from bpy.props import BoolProperty

from . import api, image_bridge, operators, panels, tasks
from .errors import StyleError
from .job import Job, Status
from .runner import Task

# World units (Blender units: metres) the style image spans at Style Scale 1 on a material texture.
STYLE_WORLD_SIZE = 1.0
STYLE_SCALE_RANGE = (0.05, 4.0)  # engine.StyleOptions.style_scale's accepted range
ORIGINAL = "neural_style_original"  # node custom properties: the original image's name ...
ORIGINAL_FAKE_USER = "neural_style_original_fake_user"  # ... and its fake-user flag before
RESULT_FOLDER = "stylized_textures"
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
            return f"'{self.image.name}' is a UDIM (tiled) image; stylize its tiles as separate images"
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
    return bool(node["neural_style_seamless"]) if "neural_style_seamless" in node else node.extension == "REPEAT"


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


def texels_per_unit(obj: bpy.types.Object, image: bpy.types.Image) -> float | None:
    """Texture pixels per world unit along the surface, from the mesh's UV and world areas; None without UVs."""
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh) or mesh.uv_layers.active is None or not mesh.polygons:
        return None
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    if count == 0:
        return None
    verts = np.empty(count * 3, np.int32)
    loops = np.empty(count * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", verts)
    mesh.loop_triangles.foreach_get("loops", loops)
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3) @ np.array(obj.matrix_world)[:3, :3].T  # translation does not change areas
    uv = np.empty(len(mesh.loops) * 2, np.float64)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    tri = co[verts.reshape(-1, 3)]
    world = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    t = uv.reshape(-1, 2)[loops.reshape(-1, 3)]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    width, height = image.size
    if world <= 0 or uv_area <= 0 or width * height == 0:
        return None
    return math.sqrt(width * height * uv_area / world)


def texture_style_scale(style_scale: float, obj: bpy.types.Object, image: bpy.types.Image) -> float:
    """The engine's style_scale that makes the style span `style_scale` x STYLE_WORLD_SIZE world units
    of the surface (see the module docstring); the panel's value as it is when the mesh has no UVs."""
    density = texels_per_unit(obj, image)
    if density is None:
        return style_scale
    low, high = STYLE_SCALE_RANGE
    return min(high, max(low, style_scale * STYLE_WORLD_SIZE * density / max(image.size)))


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Inverse of `image_bridge.linear_to_srgb` (float textures are stored scene-linear)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4)).astype(np.float32)


def periodic_fit(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """`tasks.fit_to_source` for a texture that repeats: resized as a torus (a 3x3 tiled copy's centre)."""
    height, width = source.shape[:2]
    if result.shape[:2] == (height, width):
        return tasks.fit_to_source(result, source)
    tiled = np.tile(result[..., :3], (3, 3, 1))
    rgb = image_bridge.resize(tiled, 3 * height, 3 * width)[height : 2 * height, width : 2 * width]
    return np.concatenate([rgb, source[..., 3:]], axis=2)


def result_image(original: bpy.types.Image, pixels: np.ndarray, style: str) -> bpy.types.Image:
    """A new image like `original` (float or byte, colour space, alpha) holding `pixels` (sRGB, straight alpha)."""
    height, width = pixels.shape[:2]
    image = bpy.data.images.new(f"{original.name} ({style})", width, height, alpha=True,
                                float_buffer=original.is_float)
    image.colorspace_settings.name = original.colorspace_settings.name
    image.alpha_mode = original.alpha_mode
    if original.is_float:  # scene-linear, premultiplied: the inverse of image_bridge.image_to_array
        rgba = pixels.copy()
        rgba[..., :3] = srgb_to_linear(pixels[..., :3]) * pixels[..., 3:]
        image.pixels.foreach_set(rgba[::-1].ravel())
        image.update()
    else:
        image_bridge.array_to_image(image, pixels)
    return image


def _free_path(folder: str, stem: str, suffix: str) -> str:
    path, n = os.path.join(folder, f"{stem}{suffix}"), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{stem}-{n}{suffix}")
    return path


def store(image: bpy.types.Image, original: bpy.types.Image) -> None:
    """Keep the result: a new file beside the saved .blend when the original is a file, else packed."""
    on_disk = original.packed_file is None and original.filepath and bpy.data.filepath
    if not on_disk:
        image.pack()
        return
    folder = os.path.join(os.path.dirname(bpy.data.filepath), RESULT_FOLDER)
    os.makedirs(folder, exist_ok=True)
    stem = bpy.path.clean_name(bpy.path.display_name_from_filepath(original.filepath)) + "-stylized"
    path = _free_path(folder, stem, ".exr" if original.is_float else ".png")
    image.filepath_raw = path
    image.file_format = "OPEN_EXR" if original.is_float else "PNG"
    try:
        image.save()
    except RuntimeError as exc:
        raise StyleError(f"could not write {path}: {str(exc).strip()}") from None
    image.filepath = bpy.path.relpath(path)
    image.source = "FILE"


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


def texture_options(job: Job, obj: bpy.types.Object, texture: Texture, seamless: bool | None) -> dict:
    seamless = texture.node.neural_style_seamless if seamless is None else seamless
    scale = texture_style_scale(job.options.get("style_scale", 1.0), obj, texture.image)
    options = {**job.options, "style_scale": scale, "seamless": bool(seamless)}
    if seamless and options.get("model") == "nin":
        raise StyleError("seamless textures need a VGG model: choose vgg16 or vgg19, or untick Seamless")
    return options


def stylize_textures_steps(task: Task, job: Job, names: list[str] | None = None, seamless: bool | None = None):
    """Stylize the material's picked textures; the material changes only once all results exist."""
    obj = job.obj
    material = active_material(obj)
    chosen = picked(material, names)
    made: list[tuple[bpy.types.Node, bpy.types.Image]] = []
    done = False
    try:
        with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
            style_paths = tasks.save_styles(job.styles, workdir)
            for index, texture in enumerate(chosen):
                label = f"Texture {index + 1} of {len(chosen)}: "
                yield Status(f"{label}reading '{texture.image.name}'", index / len(chosen), label)
                source = image_bridge.image_to_array(texture.image)
                content = os.path.join(workdir, "content.npy")
                np.save(content, source)
                options = texture_options(job, obj, texture, seamless)
                result = yield from tasks.run_on_worker(
                    task, content, style_paths, tasks.sized_options(options, source), workdir,
                    label=label, share=(index / len(chosen), 1 / len(chosen)))
                fit = periodic_fit(result, source) if options["seamless"] else tasks.fit_to_source(result, source)
                made.append((texture.node, result_image(texture.image, fit, tasks.style_label(job.styles))))
        for (node, image), texture in zip(made, chosen):
            store(image, texture.image)
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


class NEURAL_STYLE_OT_material_textures(operators._TaskOperator, bpy.types.Operator):
    """Stylize the ticked image textures of the active object's active material, in place"""

    bl_idname = "image.neural_style_material_textures"
    bl_label = "Stylize Material Textures"

    def start(self, context) -> Task | None:
        try:
            job = build_job(context.scene, context=context)
            picked(active_material(job.obj))
            operators.running = api.start(job, stylize_textures_steps, context)
        except StyleError as exc:
            self.report({"ERROR"}, f"Neural Style: {exc}")
            return None
        return operators.running

    def done_message(self, task):
        return f"Neural Style: stylized {len(task.result)} texture(s); Restore Textures puts the originals back"


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


class IMAGE_PT_neural_style_material_textures(panels._StylePanel, bpy.types.Panel):
    bl_label = "Material Textures"
    bl_parent_id = "IMAGE_PT_neural_style"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        obj = context.view_layer.objects.active
        try:
            material = active_material(obj)
        except StyleError as exc:
            layout.label(text=str(exc), icon="INFO")
            return
        layout.label(text=f"Active Material: {material.name}", icon="MATERIAL")
        for texture in textures(material):
            row = layout.row(align=True)
            reason = texture.refusal()
            name = f"{texture.name}: {texture.image.name if texture.image else '-'} ({texture.colorspace or '-'})"
            if reason:
                row.enabled = False
                row.label(text=name, icon="CANCEL")
                continue
            row.prop(texture.node, "neural_style_pick", text=name)
            row.prop(texture.node, "neural_style_seamless", text="", icon="MOD_ARRAY")
        layout.operator(NEURAL_STYLE_OT_material_textures.bl_idname)
        layout.operator(NEURAL_STYLE_OT_material_textures_restore.bl_idname, icon="LOOP_BACK")


classes = (NEURAL_STYLE_OT_material_textures, NEURAL_STYLE_OT_material_textures_restore,
           IMAGE_PT_neural_style_material_textures)


def register() -> None:
    bpy.types.ShaderNodeTexImage.neural_style_pick = BoolProperty(
        name="Stylize", description="Stylize this texture (default: colour textures feeding Base Color)",
        get=_get_pick, set=_set_pick)
    bpy.types.ShaderNodeTexImage.neural_style_seamless = BoolProperty(
        name="Seamless", description="Stylize so the texture still tiles (default: on when the node repeats)",
        get=_get_seamless, set=_set_seamless)


def unregister() -> None:
    del bpy.types.ShaderNodeTexImage.neural_style_pick
    del bpy.types.ShaderNodeTexImage.neural_style_seamless
