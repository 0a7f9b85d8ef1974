"""Blender images <-> float32 numpy arrays, and the add-on's one colour conversion.

Arrays here are always HxWx4, rows top-down, straight (unassociated) alpha,
RGB display-encoded sRGB in [0, 1]: what the engine takes and returns.
Blender stores pixels bottom-up; its float buffers are scene-linear with
premultiplied alpha, its byte buffers hold the file's encoded values with
straight alpha.  `image_to_array` and `array_to_image` are the only places
that cross between the two conventions.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import os_rules
from .errors import StyleError

RENDER_RESULT = "Render Result"


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """Encode scene-linear Rec.709 values with the standard sRGB transfer function (IEC 61966-2-1).

    This is the only linear -> display conversion in the add-on.  The scene's
    view transform (AgX, Filmic, looks, exposure) is deliberately not applied:
    the result is written as a plain sRGB image and often used as a material
    texture, where Blender decodes sRGB back to linear exactly; baking a tone
    mapping curve into it would apply that curve twice on the next render.
    Values above 1 (highlights) are clipped.
    """
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055).astype(np.float32)


def image_to_array(image: bpy.types.Image) -> np.ndarray:
    """Pixels of `image` as an HxWx4 sRGB array; raises `StyleError` when it has none."""
    width, height = image.size
    channels = image.channels
    if width == 0 or height == 0 or not channels:
        raise StyleError(f"image '{image.name}' has no pixels (is the file missing or unreadable?)")
    flat = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    pixels = flat.reshape(height, width, channels)[::-1]
    rgba = np.ones((height, width, 4), dtype=np.float32)
    if channels >= 3:
        rgba[..., : min(channels, 4)] = pixels[..., :4]
    else:  # grey (and grey + alpha) float images
        rgba[..., :3] = pixels[..., :1]
        if channels == 2:
            rgba[..., 3] = pixels[..., 1]
    if image.is_float and not image.colorspace_settings.is_data:
        alpha = rgba[..., 3:]
        rgba[..., :3] = linear_to_srgb(np.divide(rgba[..., :3], alpha, out=np.zeros_like(rgba[..., :3]), where=alpha > 0))
    return rgba


def array_to_image(image: bpy.types.Image, array: np.ndarray) -> None:
    """Write an HxWx3/4 sRGB array into a byte image, resizing the image to match."""
    height, width = array.shape[:2]
    if tuple(image.size) != (width, height):
        image.scale(width, height)
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., : array.shape[2]] = np.clip(array[..., :4], 0.0, 1.0)
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.update()


def new_image(name: str, width: int, height: int) -> bpy.types.Image:
    """A new sRGB byte image with alpha; Blender makes the name unique (".001"), so nothing is replaced."""
    image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=False)
    image.colorspace_settings.name = "sRGB"
    return image


def load_image_file(path: str) -> np.ndarray:
    """Read an image file through Blender (every format it knows), leaving no datablock behind."""
    path = bpy.path.abspath(path)
    if not os.path.isfile(path):
        raise StyleError(f"image file not found: {path}")
    # Always a fresh datablock: an existing one may be a sequence, or edited in memory.
    image = bpy.data.images.load(path, check_existing=False)
    try:
        return image_to_array(image)
    finally:
        bpy.data.images.remove(image)


def read_render_result(scene: bpy.types.Scene, workdir: str) -> np.ndarray:
    """The last render of `scene` as an sRGB array (alpha kept).

    Render Result pixels cannot be read directly (not at all in background
    mode), so it is saved as a 32-bit float EXR (scene-linear, premultiplied),
    loaded, and converted like any float image.  The scene's output format is
    switched for the save and restored afterwards.
    """
    result = bpy.data.images.get(RENDER_RESULT)
    if result is None:
        raise StyleError("there is no render yet: render an image first (F12)")
    path = os.path.join(workdir, "render.exr")
    settings = scene.render.image_settings
    keep = {name: getattr(settings, name) for name in ("media_type", "file_format", "color_mode", "color_depth", "exr_codec")}
    try:
        settings.media_type = "IMAGE"
        settings.file_format = "OPEN_EXR"
        settings.color_mode = "RGBA"
        settings.color_depth = "32"
        settings.exr_codec = "ZIP"
        result.save_render(path, scene=scene)
    except RuntimeError:
        raise StyleError("the render result is empty: render an image first (F12)") from None
    finally:
        for name, value in keep.items():
            setattr(settings, name, value)
    return load_image_file(path)


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (pixel-centre aligned) to height x width, the engine's argument order
    (`engine.images.resize`); brings engine output back to the source size."""
    src_h, src_w = array.shape[:2]
    if (src_h, src_w) == (height, width):
        return array

    def axis(src: int, dst: int):
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, src - 1)
        return low, high, (pos - low).astype(np.float32)

    y0, y1, wy = axis(src_h, height)
    x0, x1, wx = axis(src_w, width)
    rows = array[y0] * (1 - wy)[:, None, None] + array[y1] * wy[:, None, None]
    return (rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]).astype(np.float32)


def save_png(array: np.ndarray, path: str) -> None:
    """Write an sRGB array as an 8-bit RGBA PNG, atomically (temp file, then rename)."""
    height, width = array.shape[:2]
    image = new_image("neural style frame", width, height)
    partial = f"{path}.partial.png"
    try:
        array_to_image(image, array)
        image.filepath_raw = partial
        image.file_format = "PNG"
        image.save()
        os_rules.replace_file(partial, path)
    finally:
        bpy.data.images.remove(image)
        if os.path.exists(partial):
            os.remove(partial)
