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
`restore` (or Undo) puts it back.  Results are packed into the .blend, or, when
the original is a file on disk and the .blend is saved, written beside the
.blend in `stylized_textures/` (never over an existing file; UDIMs as
`<name>-stylized.<UDIM>.png`).

A texture whose node repeats (extension REPEAT) is stylized seamlessly
(`engine.StyleOptions.seamless`), unless the artist unticks Seamless; a UDIM's
tiles are not (they meet their neighbours, not themselves) unless ticked.
Stroke size follows the surface's real size: `style_scale` for a texture is

    Style Scale x STYLE_WORLD_SIZE x texels_per_unit / longest texture side,
    texels_per_unit = sqrt(width x height x UV area x Mapping scale / surface area)

(UV area summed over the mesh's faces in its active UV map, for a UDIM tile
over the faces in that tile; Mapping scale: |x y| of the Mapping nodes on the
node's Vector input; surface area in world units with the object's scale), so
a 4K and a 1K texture of the same surface get the same style_scale, and the
style covers the same part of the object.  Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from dataclasses import dataclass

import bpy
import numpy as np
from bpy.props import BoolProperty

from . import api, image_bridge, operators, tasks
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
            return tile_refusal(self.image)
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


def mapping_area_factor(node: bpy.types.Node | None) -> float:
    """How many times the texture repeats per unit of UV area because of Mapping nodes on the node's Vector
    input (through reroutes): |Scale x x Scale y| for a Point or Vector mapping, its inverse for a Texture
    mapping; 1 without a Mapping node.  A linked (driven by nodes) or zero Scale counts as 1."""
    factor, seen = 1.0, set()
    socket = node.inputs["Vector"] if node is not None else None
    while socket is not None and socket.is_linked:
        upstream = socket.links[0].from_node
        if upstream.name in seen:
            break
        seen.add(upstream.name)
        if upstream.type == "MAPPING":
            scale = upstream.inputs["Scale"]
            area = abs(scale.default_value[0] * scale.default_value[1])
            if not scale.is_linked and area > 0 and upstream.vector_type in ("POINT", "VECTOR", "TEXTURE"):
                factor *= 1 / area if upstream.vector_type == "TEXTURE" else area
        elif upstream.type != "REROUTE":
            break
        socket = upstream.inputs[0]  # Mapping's Vector, a reroute's input
    return factor


def _uv_tile_numbers(uv: np.ndarray) -> np.ndarray:
    """The UDIM tile number (1001 + u + 10 v) of each UV point."""
    cell = np.floor(uv).astype(np.int64)
    return 1001 + cell[..., 0] + 10 * cell[..., 1]


def texels_per_unit(obj: bpy.types.Object, image: bpy.types.Image, tile: int | None = None,
                    node: bpy.types.Node | None = None) -> float | None:
    """Texture pixels per world unit along the surface, from the mesh's UV and world areas; None without UVs.

    `tile`: a UDIM tile's number: its own size, and only the triangles whose UVs fall in it (all of them when
    none does).  `node`: the Image Texture node, whose Mapping scale multiplies the UV area."""
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
    t = uv.reshape(-1, 2)[loops.reshape(-1, 3)]
    width, height = image.size
    if tile is not None:
        tile_data = next((item for item in image.tiles if item.number == tile), None)
        if tile_data is not None:
            width, height = tile_data.size
        inside = _uv_tile_numbers(t.mean(axis=1)) == tile
        if inside.any():
            tri, t = tri[inside], t[inside]
    world = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() * mapping_area_factor(node)
    if world <= 0 or uv_area <= 0 or width * height == 0:
        return None
    return math.sqrt(width * height * uv_area / world)


def texture_style_scale(style_scale: float, obj: bpy.types.Object, image: bpy.types.Image, tile: int | None = None,
                        node: bpy.types.Node | None = None) -> float:
    """The engine's style_scale that makes the style span `style_scale` x STYLE_WORLD_SIZE world units
    of the surface (see the module docstring); the panel's value as it is when the mesh has no UVs."""
    density = texels_per_unit(obj, image, tile, node)
    if density is None:
        return style_scale
    size = next((item.size for item in image.tiles if item.number == tile), image.size) if tile else image.size
    low, high = STYLE_SCALE_RANGE
    return min(high, max(low, style_scale * STYLE_WORLD_SIZE * density / max(size)))


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


# UDIM (tiled) images.  Blender gives Python the pixels of the first tile only (`image.pixels`), and no way
# to write the others, so each tile is read from its own file (on disk, or the packed copy written to a
# temporary folder) and a result is written as one file per tile and loaded back as a tiled image.
def tile_path(filepath: str, number: int) -> str:
    """`filepath` with its <UDIM> (1001, 1002, ...) or <UVTILE> (u1_v1, u2_v1, ...) token filled in."""
    u, v = (number - 1001) % 10 + 1, (number - 1001) // 10 + 1
    return filepath.replace("<UDIM>", str(number)).replace("<UVTILE>", f"u{u}_v{v}")


def _tile_files(image: bpy.types.Image) -> dict[int, object]:
    """tile number -> its packed file, or its path on disk (missing tiles are left out)."""
    packed = {item.tile_number: item.packed_file for item in image.packed_files}
    found = {}
    for tile in image.tiles:
        if tile.number in packed:
            found[tile.number] = packed[tile.number]
        elif image.filepath and not image.packed_files:
            path = tile_path(bpy.path.abspath(image.filepath), tile.number)
            if os.path.isfile(path):
                found[tile.number] = path
    return found


def tile_refusal(image: bpy.types.Image) -> str | None:
    """Why the UDIM `image`'s tiles cannot be read, or None."""
    if image.is_dirty:
        return f"the UDIM image '{image.name}' has unsaved changes: save or pack its tiles first"
    files = _tile_files(image)
    missing = [tile.number for tile in image.tiles if tile.number not in files]
    if missing:
        return (f"the UDIM image '{image.name}' has no file for tile {missing[0]} (a generated or missing tile): "
                "save or pack its tiles first")
    return None


def read_tiles(image: bpy.types.Image, workdir: str) -> list[tuple[int | None, np.ndarray]]:
    """[(tile number, sRGB pixels)]: every tile of a UDIM image, each read as Blender reads it (the image's
    colour space and alpha mode); [(None, pixels)] for a still image."""
    if image.source != "TILED":
        return [(None, image_bridge.image_to_array(image))]
    reason = tile_refusal(image)
    if reason:
        raise StyleError(reason)
    tiles = []
    for number, file in sorted(_tile_files(image).items()):
        path = file
        if not isinstance(file, str):  # packed: Blender reads it from a file of its own
            path = os.path.join(workdir, f"tile-{number}{os.path.splitext(image.filepath)[1] or '.img'}")
            with open(path, "wb") as out:
                out.write(file.data)
        tile = bpy.data.images.load(path, check_existing=False)
        try:
            tile.colorspace_settings.name = image.colorspace_settings.name
            tile.alpha_mode = image.alpha_mode
            tiles.append((number, image_bridge.image_to_array(tile)))
        finally:
            bpy.data.images.remove(tile)
    return tiles


@contextlib.contextmanager
def _exr_output(scene: bpy.types.Scene):
    """The scene's output format as 32-bit float RGBA OpenEXR for `Image.save_render` (put back after)."""
    settings = scene.render.image_settings
    keep = {name: getattr(settings, name) for name in ("media_type", "file_format", "color_mode", "color_depth", "exr_codec")}
    try:
        settings.media_type, settings.file_format, settings.color_mode = "IMAGE", "OPEN_EXR", "RGBA"
        settings.color_depth, settings.exr_codec = "32", "ZIP"
        yield
    finally:
        for name, value in keep.items():
            setattr(settings, name, value)


def write_texture_file(path: str, pixels: np.ndarray, float_buffer: bool) -> None:
    """Write sRGB `pixels` (straight alpha) to `path`: an 8-bit PNG, or, for a float texture, a 32-bit
    scene-linear premultiplied OpenEXR (through `save_render`, which writes the float buffer exactly;
    `Image.save` of a float image does not read back the same)."""
    if not float_buffer:
        image_bridge.save_png(pixels, path)
        return
    height, width = pixels.shape[:2]
    image = bpy.data.images.new("neural style texture", width, height, alpha=True, float_buffer=True)
    try:
        rgba = pixels.copy()
        rgba[..., :3] = srgb_to_linear(pixels[..., :3]) * pixels[..., 3:]
        image.pixels.foreach_set(rgba[::-1].ravel())
        scene = bpy.context.scene
        with _exr_output(scene):
            image.save_render(path, scene=scene)
    except RuntimeError as exc:
        raise StyleError(f"could not write {path}: {str(exc).strip()}") from None
    finally:
        bpy.data.images.remove(image)


def _stem(original: bpy.types.Image) -> str:
    name = os.path.basename(original.filepath) or original.name
    for token in ("<UDIM>", "<UVTILE>"):
        name = name.replace(f".{token}", "").replace(token, "")
    return bpy.path.clean_name(os.path.splitext(name)[0]) + "-stylized"


def _free_name(folder: str, stem: str, suffix: str, tiled: bool) -> str:
    """A file name in `folder` that no file uses (for UDIMs: no tile of it), e.g. stem-2.<UDIM>.png."""
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        if tiled:
            name += ".<UDIM>"
            taken = any(entry.startswith(name[: -len("<UDIM>")]) and entry.endswith(suffix)
                        for entry in os.listdir(folder))
        else:
            taken = os.path.exists(os.path.join(folder, name + suffix))
        if not taken:
            return os.path.join(folder, name + suffix)
        n += 1


def result_image(original: bpy.types.Image, tiles: list[tuple[int | None, np.ndarray]], style: str,
                 workdir: str) -> tuple[bpy.types.Image, list[str]]:
    """A new image like `original` holding the stylized `tiles` (sRGB, straight alpha), written as files and
    loaded; returns it and the files written beside the .blend (none when it is packed).

    Beside the saved .blend in RESULT_FOLDER when the original is a file on disk, else packed.  Byte textures
    give 8-bit PNGs with the original's colour space and alpha mode; float ones scene-linear premultiplied
    EXRs (read as Blender's linear space).  A UDIM gives a UDIM with the same tile numbers and sizes."""
    tiled = original.source == "TILED"
    suffix = ".exr" if original.is_float else ".png"
    on_disk = original.packed_file is None and bool(original.filepath) and bool(bpy.data.filepath)
    folder = os.path.join(os.path.dirname(bpy.data.filepath), RESULT_FOLDER) if on_disk else workdir
    os.makedirs(folder, exist_ok=True)
    path = _free_name(folder, _stem(original), suffix, tiled)
    written = []
    try:
        for number, pixels in tiles:
            written.append(tile_path(path, number) if tiled else path)
            write_texture_file(written[-1], pixels, original.is_float)
        image = bpy.data.images.load(written[0], check_existing=False)
        image.name = f"{original.name} ({style})"
        if tiled:
            image.source = "TILED"  # Blender finds the other tiles by their file names; filepath gets <UDIM>
            numbers = sorted(tile.number for tile in image.tiles)
            if numbers != [number for number, _ in tiles]:
                bpy.data.images.remove(image)
                raise StyleError(f"the stylized tiles of '{original.name}' came back as tiles {numbers}")
        if not original.is_float:
            image.colorspace_settings.name = original.colorspace_settings.name
            image.alpha_mode = original.alpha_mode
        if on_disk:
            image.filepath = bpy.path.relpath(image.filepath)
        else:
            image.pack()
            written = []
    except BaseException:
        for file in written:
            if os.path.exists(file):
                os.remove(file)
        raise
    return image, written


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
    scale = texture_style_scale(job.options.get("style_scale", 1.0), obj, texture.image, tile, texture.node)
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
                tiles = read_tiles(texture.image, workdir)
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
                image, written = result_image(texture.image, results, tasks.style_label(job.styles), workdir)
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
