"""Whether this Python has what the engine needs: every line of requirements.txt, importable.

The worker's `check` command runs `check_requirements()` so a host (the
Blender add-on after "Install Dependencies") learns in one round trip that the
engine will work, or which package is missing.  Lazy imports (OpenCV, OpenEXR,
onnxruntime, tqdm) are imported here too, so a missing one is found before a
job needs it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

from .errors import EngineError

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def requirement_names(path: Path = REQUIREMENTS) -> list[str]:
    """The distribution names in a requirements file (comments and blank lines skipped)."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(re.match(r"[A-Za-z0-9._-]+", line).group())
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_names(distribution: str) -> list[str]:
    """The top-level modules an installed distribution provides (e.g. opencv-python-headless -> cv2).

    From its top_level.txt, else from its file list (Python 3.11's own inference misses extension
    modules such as OpenEXR's `OpenEXR.cpython-311-x86_64-linux-gnu.so`).
    """
    dist = importlib.metadata.distribution(distribution)
    listed = (dist.read_text("top_level.txt") or "").split()
    if not listed:
        for file in dist.files or ():
            if file.suffix in (".py", ".so", ".pyd"):
                listed.append(file.parts[0] if len(file.parts) > 1 else file.name.split(".")[0])
    modules = sorted({name for name in listed if name.isidentifier() and not name.startswith("_")})
    # A distribution named like its module (torch) is checked by that module alone, not its extras (torchgen).
    wanted = _normalise(distribution)
    return [module for module in modules if _normalise(module) == wanted] or modules


def check_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """Import every requirement; returns {module imported: its distribution's version} (`cv2`: "4.10.0.84")
    or raises EngineError naming what failed."""
    found = {}
    for name in requirement_names(path):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise EngineError(f"the Python running the engine lacks {name}: install the engine's requirements "
                              "(Install Dependencies in Blender)") from None
        for module in import_names(name):
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - any import failure (ImportError, a broken native library)
                raise EngineError(f"{name} {version} is installed but `import {module}` fails: "
                                  f"{type(exc).__name__}: {exc}") from None
            found[module] = version
    return found
