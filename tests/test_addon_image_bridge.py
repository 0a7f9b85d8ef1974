"""Blender image <-> array conversion: orientation, colour encoding, alpha."""

from __future__ import annotations

import addon_support as support
import bpy
import numpy as np
import pytest

from neural_style_addon import image_bridge


def test_linear_to_srgb_is_the_standard_transfer_function():
    linear = np.array([0.0, 0.0031308, 0.18, 0.5, 1.0, 2.0], np.float32)
    expected = [0.0, 0.04045, 0.4613, 0.7354, 1.0, 1.0]  # IEC 61966-2-1; above 1 clips
    np.testing.assert_allclose(image_bridge.linear_to_srgb(linear), expected, atol=2e-4)


def make_image(float_buffer: bool) -> bpy.types.Image:
    image = bpy.data.images.new("probe", 3, 2, alpha=True, float_buffer=float_buffer)
    rgba = np.zeros((2, 3, 4), np.float32)
    rgba[1, :] = (0.18 * 0.5, 0.0, 0.0, 0.5)  # Blender's row 1 is the top row; premultiplied for float
    rgba[0, :] = (0.0, 0.0, 0.18, 1.0)
    image.pixels.foreach_set(rgba.ravel())
    return image


def test_float_images_are_unpremultiplied_encoded_and_flipped_top_down():
    image = make_image(float_buffer=True)
    array = image_bridge.image_to_array(image)
    assert array.shape == (2, 3, 4) and array.dtype == np.float32
    np.testing.assert_allclose(array[0, 0], [0.4613, 0, 0, 0.5], atol=2e-4)  # top row: straight 0.18 -> sRGB
    np.testing.assert_allclose(array[1, 0], [0, 0, 0.4613, 1.0], atol=2e-4)
    bpy.data.images.remove(image)


def test_byte_images_are_already_srgb_and_pass_unchanged():
    image = make_image(float_buffer=False)
    array = image_bridge.image_to_array(image)
    np.testing.assert_allclose(array[1, 0], [0, 0, 0.18, 1.0], atol=1 / 255)
    bpy.data.images.remove(image)


def test_array_round_trips_through_a_new_byte_image():
    array = np.random.default_rng(2).random((5, 7, 4)).astype(np.float32)
    image = image_bridge.new_image("round trip", 1, 1)
    image_bridge.array_to_image(image, array)  # resizes the image to fit
    assert tuple(image.size) == (7, 5) and image.colorspace_settings.name == "sRGB"
    np.testing.assert_allclose(image_bridge.image_to_array(image), array, atol=0.5 / 255 + 1e-6)
    bpy.data.images.remove(image)


def test_image_without_pixels_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(image_bridge.StyleError, match="has no pixels"):
        image_bridge.load_image_file(str(broken))
    assert "broken.png" not in support.image_names()


def test_resize_keeps_constant_images_constant_and_hits_the_requested_size():
    array = np.full((10, 20, 3), 0.25, np.float32)
    out = image_bridge.resize(array, 17, 33)
    assert out.shape == (17, 33, 3)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    ramp = np.linspace(0, 1, 8, dtype=np.float32)[None, :, None].repeat(2, 0)
    np.testing.assert_allclose(image_bridge.resize(ramp, 2, 4)[0, :, 0], [1 / 14, 5 / 14, 9 / 14, 13 / 14], atol=1e-6)


def test_png_is_written_atomically_and_leaves_no_datablock(tmp_path):
    names = support.image_names()
    path = tmp_path / "frame.png"
    image_bridge.save_png(np.full((4, 6, 4), 0.5, np.float32), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]
    assert support.image_names() == names
