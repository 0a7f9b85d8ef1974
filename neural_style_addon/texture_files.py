"""Texture pixels in and out of files: UDIM tiles, result files and the result image.

`read_tiles` gives a texture's sRGB pixels (every tile of a UDIM;
`tile_refusal` says why they cannot be read).  `result_image` writes stylized
pixels as files (`write_texture_file`: 8-bit PNGs for byte textures, 32-bit
scene-linear premultiplied EXRs for float ones) and loads them as a new image
like the original: beside the saved .blend in RESULT_FOLDER (never over an
existing file; UDIMs as `<name>-stylized.<UDIM>.png`) when the original is a
file on disk, else packed.  Used by `material_textures`; no torch.
"""

from __future__ import annotations

import contextlib
import os

import bpy
import numpy as np

from . import image_bridge, os_rules
from .errors import StyleError

RESULT_FOLDER = "stylized_textures"


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Inverse of `image_bridge.linear_to_srgb` (float textures are stored scene-linear)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4)).astype(np.float32)


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
            image.filepath = os_rules.blend_relative(image.filepath, os.path.dirname(bpy.data.filepath))
        else:
            image.pack()
            written = []
    except BaseException:
        for file in written:
            if os.path.exists(file):
                os.remove(file)
        raise
    return image, written
