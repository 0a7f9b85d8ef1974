"""Image files <-> float32 arrays, the only format the engine's API speaks.

Arrays are HxWxC float32 in [0, 1], C = 3 (RGB) or 4 (RGBA, straight alpha),
sRGB-encoded.  EXR files hold scene-linear light, so they are converted to and
from sRGB here (`linear_to_srgb` / `srgb_to_linear`), the CLI's one colour
conversion point.  Writes are atomic (temp file, then rename) and refuse to
replace any file the run reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import EngineError

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first cv2 import

# Inputs larger than this (per side) are refused rather than decoded into memory.
MAX_INPUT_SIDE = 16384
Image.MAX_IMAGE_PIXELS = MAX_INPUT_SIDE * MAX_INPUT_SIDE

WRITABLE = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp"}


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values (clipped to [0, 1])."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any common image file -> HxWx3/4 float32 sRGB; grayscale and palettes become RGB."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise EngineError(f"image is empty (0 bytes): {path}")
    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    if path.suffix.lower() in (".png", ".tif", ".tiff"):
        deep = _read_16bit_colour(path)
        if deep is not None:
            return deep
    try:
        with Image.open(path) as img:
            if max(img.size) > MAX_INPUT_SIDE:
                raise EngineError(f"image too large: {img.size[0]}x{img.size[1]} (limit {MAX_INPUT_SIDE} px per side)")
            img.load()
            return _pil_to_array(img)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise EngineError(f"cannot read image {path}: {exc}") from None
    except OSError as exc:
        raise EngineError(f"cannot read image {path} (corrupt or truncated): {exc}") from None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: keep the precision instead of Pillow's 8-bit convert.
        grey = np.asarray(img, dtype=np.float32) / (65535.0 if img.mode.startswith("I;16") else max(1, np.max(img)))
        return np.repeat(grey[..., None], 3, axis=2).clip(0, 1)
    arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr)


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    """16-bit RGB(A) PNG/TIFF at full precision (Pillow would reduce them to 8 bits)."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16 or data.ndim != 3:
        return None
    data = data.astype(np.float32) / 65535.0
    rgb = data[..., 2::-1]
    return np.ascontiguousarray(np.concatenate([rgb, data[..., 3:4]], axis=2) if data.shape[2] == 4 else rgb)


def _read_exr(path: Path) -> np.ndarray:
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise EngineError(f"cannot read EXR image {path}")
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    rgb = linear_to_srgb(data[..., 2::-1])
    if data.shape[2] == 4:
        return np.concatenate([rgb, np.clip(data[..., 3:4], 0, 1)], axis=2)
    return rgb


def write_image(path: str | os.PathLike, image: np.ndarray, protect: tuple = (), bits: int = 8) -> Path:
    """Write atomically; never over a path in `protect` (the run's inputs)."""
    path = check_output(path, protect)
    suffix = path.suffix.lower()
    folder = path.parent
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        _encode(Path(tmp), image, suffix, bits)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | os.PathLike, protect: tuple = ()) -> Path:
    """Fail before any work if `path` cannot be written or is one of the inputs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise EngineError(f"cannot write {suffix or 'files without an extension'}; use one of {', '.join(sorted(WRITABLE))}")
    for other in protect:
        if Path(other).exists() and path.exists() and os.path.samefile(path, other):
            raise EngineError(f"refusing to overwrite an input image: {path}")
    folder = path.parent
    if not folder.is_dir():
        raise EngineError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise EngineError(f"output folder is not writable: {folder}")
    return path


def _encode(tmp: Path, image: np.ndarray, suffix: str, bits: int) -> None:
    if suffix == ".exr":
        import cv2

        rgb = srgb_to_linear(image[..., :3])[..., ::-1]
        data = np.concatenate([rgb, image[..., 3:4]], axis=2) if image.shape[2] == 4 else rgb
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
