"""Files on disk: atomic writes, the image suffixes the engine reads and writes, and frame listing.

Every file the engine writes (images, caches, models, downloads) goes through
`atomic_write`, so an interrupted or failed write never leaves a half-written
file that a later run would trust.  Frames are listed in one order everywhere:
natural order on the file name (frame_2 before frame_10).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import os_rules
from .errors import EngineError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp"})


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside `path` (same suffix, so encoders pick the format) that
    replaces `path` only if the block succeeds; on any failure it is removed.  The file gets the
    permissions a plain `open` would give it (the umask applies), not `mkstemp`'s 0600.  A name
    Windows cannot hold is refused on every system (`os_rules.name_problem`), and on Windows a
    target another program has open is waited for (`os_rules.replace_file`)."""
    path = Path(path)
    problem = os_rules.name_problem(path.name)
    if problem:
        raise EngineError(f"cannot write {path}: {problem}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os_rules.replace_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def natural_key(name: str) -> list:
    """Sort key comparing runs of digits as numbers: "frame_2" < "frame_10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of `folder` (hidden files skipped) in natural name order."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return sorted((p for p in files if p.is_file()), key=lambda p: natural_key(p.name))


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """`image_files(folder)`, refusing a missing folder or one without images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"frames folder not found: {folder}")
    files = image_files(folder)
    if not files:
        raise EngineError(f"no image files in {folder}")
    return files


def frames_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named directly, or found in named folders (`image_files` order), in the order given."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found += image_files(item)
        elif item.is_file():
            found.append(item)
        else:
            raise EngineError(f"no such file or folder: {item}")
    return found
