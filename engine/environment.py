"""Whether this Python has what the engine needs: every line of requirements.txt that applies here, importable.

The worker's `check` command runs `check_requirements()` so a host (the
Blender add-on after "Install Dependencies") learns in one round trip that the
engine will work, or which package is missing.  Lazy imports (OpenCV, OpenEXR,
onnxruntime, tqdm) are imported here too, so a missing one is found before a
job needs it.  Optional packages (Ray, for distributed runs) are checked where
they are installed: the add-on installs Ray only while its Ray Cluster is set.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

from .errors import EngineError

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
ROOT = Path(__file__).resolve().parents[1]  # the folder holding engine/: a source checkout or the Blender extension
# Distributions of pyproject.toml's optional extras that the engine imports where a feature needs them: the check
# imports each one that is installed (Install Dependencies adds Ray, the `cluster` extra, where a Ray Cluster is set).
OPTIONAL = ("ray",)


def requirement_names(path: Path = REQUIREMENTS, environment: dict[str, str] | None = None) -> list[str]:
    """The distribution names in a requirements file whose environment markers hold on this machine (or in
    `environment`, marker variables such as {"sys_platform": "darwin"}); comments and blank lines skipped."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        raise EngineError("the Python running the engine lacks packaging: install the engine's requirements "
                          "(Install Dependencies in Blender)") from None
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                names.append(requirement.name)
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


def check_requirements(path: Path = REQUIREMENTS, optional: tuple[str, ...] = OPTIONAL) -> dict[str, str]:
    """Import every requirement, and each `optional` distribution that is installed; returns {module imported:
    its distribution's version} (`cv2`: "4.10.0.84") or raises EngineError naming what failed."""
    found = {}
    for name in requirement_names(path) + [name for name in optional if _installed(name)]:
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


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def in_blender_extension(root: Path = ROOT) -> bool:
    """Whether this engine is the copy inside the Blender extension (beside blender_manifest.toml, without the
    pyproject.toml of a source checkout), whose packages come from the add-on's Install Dependencies, not pip."""
    return (root / "blender_manifest.toml").is_file() and not (root / "pyproject.toml").is_file()


def ray_missing(root: Path = ROOT) -> EngineError:
    """The one sentence for a distributed run without Ray, saying how to get it where this engine runs."""
    if in_blender_extension(root):
        return EngineError("distributed runs need Ray, which is not installed for the style engine: click Install "
                           "Dependencies in the add-on's preferences (with a Ray Cluster set it installs Ray), "
                           "then run again")
    return EngineError("distributed runs need Ray: pip install 'neural-style-engine[cluster]'")


def torch_build() -> dict:
    """What the installed torch was built for and can use here: `torch` (its version), `cuda` (the CUDA
    version of a CUDA build, else None), `gpu` (the first CUDA device's name when one answers), `mps_built` and
    `mps` (an Apple GPU build, and whether the GPU is available to it).  The add-on shows it in one line."""
    import torch

    cuda = torch.version.cuda
    mps_built = bool(torch.backends.mps.is_built())
    return {"torch": torch.__version__, "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else None,
            "mps_built": mps_built, "mps": bool(mps_built and torch.backends.mps.is_available())}
