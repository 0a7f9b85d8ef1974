"""One source of truth for the engine's runtime requirements: engine/requirements.txt.

pyproject.toml reads it (dynamic dependencies), the add-on's installer reads it
(tests/test_addon_worker.py), and every third-party module the engine imports,
at the top of a file or lazily inside a function, must be covered by it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
# Import name -> distribution, where they differ (otherwise the distribution is named like the module).
DISTRIBUTIONS = {"cv2": "opencv-python-headless", "PIL": "pillow", "onnxruntime": "onnxruntime-gpu"}


def requirement_names(path: Path) -> dict[str, str]:
    """Normalised distribution name -> requirement line, for a requirements/constraints file."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    names = {}
    for line in lines:
        if line and not line.startswith("#"):
            assert "#" not in line, f"{path.name}: put the reason on its own comment line: {line}"
            names[normalise(re.match(r"[A-Za-z0-9._-]+", line).group())] = line
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in `source`, wherever it appears (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def third_party_imports() -> dict[str, list[str]]:
    """Third-party top-level module -> the engine files importing it."""
    local = {"engine", "__future__"}
    found: dict[str, list[str]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        for module in imported_modules(path.read_text()):
            if module not in local and module not in sys.stdlib_module_names:
                found.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_import_collector_sees_lazy_and_nested_imports():
    source = "import os\nfrom . import x\ndef f():\n    import cv2\n    if True:\n        from PIL.Image import open\n"
    assert imported_modules(source) == {"os", "cv2", "PIL"}


def test_every_module_the_engine_imports_is_a_declared_requirement():
    required = requirement_names(ENGINE / "requirements.txt")
    imports = third_party_imports()
    assert {"torch", "numpy", "cv2", "PIL", "onnxruntime", "OpenEXR"} <= set(imports)  # the collector works
    missing = {module: files for module, files in imports.items()
               if normalise(DISTRIBUTIONS.get(module, module)) not in required}
    assert not missing, f"imported by the engine but not in engine/requirements.txt: {missing}"


def test_every_requirement_is_pinned_to_the_tested_version():
    pins = requirement_names(ENGINE / "constraints.txt")
    for name in requirement_names(ENGINE / "requirements.txt"):
        assert name in pins and "==" in pins[name], f"engine/constraints.txt has no pin for {name}"


def test_pyproject_reads_its_dependencies_from_the_requirements_file():
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml", expand=True)["project"]
    assert "dependencies" in project["dynamic"]
    listed = [line for line in requirement_names(ENGINE / "requirements.txt").values()]
    assert project["dependencies"] == listed
    assert not (ROOT / "constraints.txt").exists(), "the pins live in engine/constraints.txt, shipped with the engine"
