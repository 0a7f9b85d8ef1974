"""Image files <-> float32 arrays, the only format the engine's API speaks.

Arrays are HxWxC float32 in [0, 1], C = 3 (RGB) or 4 (RGBA, straight alpha),
sRGB-encoded.  EXR files hold scene-linear light, so they are converted to and
from sRGB here (`linear_to_srgb` / `srgb_to_linear`), the CLI's one colour
conversion point.  `read_image(path, hdr=True)` keeps values above 1 of float
files (EXR, float TIFF) for `engine.hdr`; EXR output keeps them too.

Reading checks the size in the file's header against `MAX_INPUT_SIDE` and
`MAX_INPUT_PIXELS` before any decoder runs (`check_size`), and refuses
truncated files.  PNG and TIFF are decoded by OpenCV, which keeps 16-bit and
float samples; other formats by Pillow.  Writes are atomic (temp file, then
rename) and refuse to replace any file the run reads.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, UnidentifiedImageError

from .errors import EngineError
from .files import IMAGE_SUFFIXES, atomic_write

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first cv2 import

# Inputs are refused, from their header, when a side or the pixel count exceeds these:
# 16384 px per side, and 16384 x 8192 pixels in all (a 16K panorama; 2 GiB as float32 RGBA).
MAX_INPUT_SIDE = 16384
MAX_INPUT_PIXELS = 16384 * 8192
Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS  # Pillow's own bomb check, for any Image.open elsewhere
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never an image with grey rows


def linear_to_srgb(x: np.ndarray, hdr: bool = False) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values, clipped to [0, 1] (with `hdr`, only below 0:
    values above 1 continue the same curve, "extended sRGB")."""
    x = np.clip(x, 0.0, None if hdr else 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def srgb_to_linear(x: np.ndarray, hdr: bool = False) -> np.ndarray:
    """The inverse of `linear_to_srgb`, with the same clipping."""
    x = np.clip(x, 0.0, None if hdr else 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(np.float32)


def check_size(width: int, height: int, source: object) -> None:
    """Refuse an image whose declared size exceeds the input limits, before anything decodes it."""
    if width < 1 or height < 1:
        raise EngineError(f"{source} declares an empty image ({width}x{height})")
    if max(width, height) > MAX_INPUT_SIDE or width * height > MAX_INPUT_PIXELS:
        raise EngineError(
            f"image too large: {source} is {width}x{height}; the limit is {MAX_INPUT_SIDE} px per side "
            f"and {MAX_INPUT_PIXELS:,} pixels"
        )


def read_image(path: str | os.PathLike, hdr: bool = False) -> np.ndarray:
    """Any common image file -> HxWx3/4 float32 sRGB; grayscale and palettes become RGB.

    Values are in [0, 1]; with `hdr`, EXR and float TIFF keep values above 1.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise EngineError(f"image is empty (0 bytes): {path}")
    if path.suffix.lower() == ".exr":
        check_size(*_exr_size(path), path)
        data = _samples(_decode(path), hdr=True)
        rgb = linear_to_srgb(data[..., :3], hdr=hdr)
        return np.concatenate([rgb, np.clip(data[..., 3:], 0, 1)], axis=2) if data.shape[2] == 4 else rgb
    width, height, kind = _header(path)
    check_size(width, height, path)
    if kind == "PNG":
        _check_png_data(path)  # Pillow and libpng differ on short data; refuse it before either decodes
    if kind in ("PNG", "TIFF"):
        return _samples(_decode(path), hdr)
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_array(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise EngineError(f"cannot read image {path} (corrupt or truncated): {exc}") from None


def _header(path: Path) -> tuple[int, int, str]:
    """(width, height, format) from the file's header; no pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header only
                return img.size[0], img.size[1], img.format or ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EngineError(
            f"image too large: {path} has more than {MAX_INPUT_PIXELS:,} pixels; the limit is "
            f"{MAX_INPUT_SIDE} px per side and {MAX_INPUT_PIXELS:,} pixels"
        ) from None
    except UnidentifiedImageError:
        if path.suffix.lower() in (".tif", ".tiff"):  # float/LogLuv TIFF: Pillow reads the tags, not the pixels
            return (*_tiff_size(path), "TIFF")
        raise EngineError(f"cannot read image {path}: not an image file Pillow or OpenCV can read") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise EngineError(f"cannot read image {path} (corrupt or truncated): {exc}") from None


def _tiff_size(path: Path) -> tuple[int, int]:
    """Width and height from a TIFF's first directory (Pillow's tag reader)."""
    try:
        with open(path, "rb") as fp:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(fp.read(8))
            fp.seek(ifd.next)
            ifd.load(fp)
            return int(ifd[256]), int(ifd[257])
    except (OSError, SyntaxError, ValueError, KeyError, struct.error) as exc:
        raise EngineError(f"cannot read image {path}: not a readable TIFF ({exc})") from None


def _exr_size(path: Path) -> tuple[int, int]:
    """The largest data window of any part of an EXR, from its header."""
    import OpenEXR

    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            windows = [part.header["dataWindow"] for part in exr.parts]
    except Exception as exc:  # noqa: BLE001 - the binding raises bare RuntimeErrors for any bad file
        raise EngineError(f"cannot read EXR image {path}: {exc}") from None
    sizes = [(int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1) for lo, hi in windows]
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def _check_png_data(path: Path) -> None:
    """Refuse a PNG whose compressed data holds fewer (or more) bytes than its header declares.

    Pillow fills missing rows with black and libpng prints to stderr, so the
    count is made here: inflate the IDAT stream without keeping it.
    """
    with open(path, "rb") as fp:
        fp.seek(16)
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
        fp.seek(8)
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 0)
        passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
        expected = 0
        for x0, y0, dx, dy in passes:
            w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
            if w > 0 and h > 0:
                expected += h * (1 + -(-w * channels * depth // 8))
        inflater, produced = zlib.decompressobj(), 0
        try:
            while header := fp.read(8):
                length, kind = struct.unpack(">I4s", header)
                data = fp.read(length)
                fp.seek(4, os.SEEK_CUR)  # CRC
                if kind == b"IDAT":
                    chunk = inflater.decompress(data, 1 << 24)
                    while chunk:
                        produced += len(chunk)
                        chunk = inflater.decompress(inflater.unconsumed_tail, 1 << 24)
                elif kind == b"IEND":
                    break
        except (struct.error, zlib.error) as exc:
            raise EngineError(f"cannot read image {path} (corrupt PNG data: {exc})") from None
    if produced != expected:
        raise EngineError(
            f"cannot read image {path}: truncated or corrupt (its pixel data holds {produced:,} of the "
            f"{expected:,} bytes its header declares)"
        )


# Adam7 interlacing passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _decode(path: Path) -> np.ndarray:
    """OpenCV's decode of a file whose size was checked (from bytes, so any path works on Windows)."""
    import cv2

    try:
        data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise EngineError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None
    if data is None:
        raise EngineError(f"cannot read image {path} (corrupt, truncated or an unsupported variant)")
    return data


def _samples(data: np.ndarray, hdr: bool) -> np.ndarray:
    """OpenCV's HxW / HxWx3 BGR / HxWx4 BGRA samples -> RGB(A) float32 (integers scaled to [0, 1])."""
    if data.dtype == np.uint8:
        data = data.astype(np.float32) / 255.0
    elif data.dtype == np.uint16:
        data = data.astype(np.float32) / 65535.0
    elif data.dtype in (np.float16, np.float32, np.float64):
        data = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=65504.0, neginf=0.0)  # 65504: half max
        data = np.clip(data, 0.0, None if hdr else 1.0)
    else:
        raise EngineError(f"unsupported sample type {data.dtype} (use 8- or 16-bit integers or floats)")
    if data.ndim == 2:
        data = data[..., None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    elif data.shape[2] == 2:  # grey + alpha
        data = np.concatenate([np.repeat(data[..., :1], 3, axis=2), data[..., 1:]], axis=2)
    rgb = data[..., 2::-1]
    return np.ascontiguousarray(np.concatenate([rgb, data[..., 3:4]], axis=2) if data.shape[2] >= 4 else rgb)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit, 32-bit or float grayscale: keep the precision instead of Pillow's 8-bit convert.
        scale = 65535.0 if img.mode.startswith("I;16") else 1.0 if img.mode == "F" else max(1, np.max(img))
        grey = np.asarray(img, dtype=np.float32) / scale
        return np.repeat(grey[..., None], 3, axis=2).clip(0, 1)
    arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike, image: np.ndarray, protect: tuple = (), bits: int = 8) -> Path:
    """Write atomically; never over a path in `protect` (the run's inputs)."""
    path = check_output(path, protect)
    suffix = path.suffix.lower()
    image = np.asarray(image, dtype=np.float32)
    # EXR keeps highlights above 1 (engine.hdr); every other format holds [0, 1].
    image = np.clip(image, 0.0, None if suffix == ".exr" else 1.0)
    try:
        with atomic_write(path) as tmp:
            _encode(tmp, image, suffix, bits)
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc}") from None
    return path


def check_output(path: str | os.PathLike, protect: tuple = ()) -> Path:
    """Fail before any work if `path` cannot be written or is one of the inputs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise EngineError(f"cannot write {suffix or 'files without an extension'}; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    if path.is_dir():
        raise EngineError(f"the output is a folder, not a file: {path}")
    for other in protect:
        if Path(other).exists() and path.exists() and os.path.samefile(path, other):
            raise EngineError(f"refusing to overwrite an input image: {path}")
    if not path.parent.is_dir():
        raise EngineError(f"output folder does not exist: {path.parent}")
    check_output_folder(path.parent)
    return path


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Fail before any work if files cannot be written into `folder` (which the run may create)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EngineError(f"the output folder is a file, not a folder: {existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EngineError(f"output folder is not writable: {existing}")
    return folder


def _encode(tmp: Path, image: np.ndarray, suffix: str, bits: int) -> None:
    if suffix == ".exr":
        import cv2

        rgb = srgb_to_linear(image[..., :3], hdr=True)[..., ::-1]
        data = np.concatenate([rgb, np.clip(image[..., 3:4], 0, 1)], axis=2) if image.shape[2] == 4 else rgb
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(data, dtype=np.float32)):
            raise OSError("OpenCV could not encode EXR")
        return
    if suffix in (".jpg", ".jpeg", ".bmp") and image.shape[2] == 4:
        image = image[..., :3]  # these formats have no alpha
    if bits == 16 and suffix in (".png", ".tif", ".tiff"):
        import cv2  # Pillow cannot write 16-bit colour

        data = np.round(image * 65535).astype(np.uint16)
        data = np.concatenate([data[..., 2::-1], data[..., 3:]], axis=2)
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(data)):
            raise OSError("OpenCV could not encode a 16-bit image")
        return
    img = Image.fromarray(np.round(image * 255).astype(np.uint8))
    img.save(tmp, **({"quality": 95} if suffix in (".jpg", ".jpeg") else {}))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """High-quality float resize (Pillow's per-channel 'F' mode, Lanczos)."""
    if image.shape[:2] == (height, width):
        return image
    channels = [
        np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.LANCZOS))
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)
