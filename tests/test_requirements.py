"""One source of truth for the engine's runtime requirements: engine/requirements.txt.

pyproject.toml reads it (dynamic dependencies), the add-on's installer reads it
(tests/test_addon_worker.py), and every third-party module the engine imports,
at the top of a file or lazily inside a function, must be covered by it; only
a module imported inside functions alone may come from an optional extra of
pyproject.toml instead (Ray, for `cluster`).
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


def imported_modules(source: str) -> dict[str, bool]:
    """Top-level name of every absolute import in `source`, wherever it appears -> whether one is at module level."""
    tree = ast.parse(source)
    module_level = set(tree.body)
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            found[top] = found.get(top, False) or node in module_level
    return found


def third_party_imports() -> dict[str, dict[str, bool]]:
    """Third-party top-level module -> {engine file importing it: at module level}."""
    local = {"engine", "__future__"}
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        for module, eager in imported_modules(path.read_text()).items():
            if module not in local and module not in sys.stdlib_module_names:
                found.setdefault(module, {})[str(path.relative_to(ROOT))] = eager
    return found


def pyproject() -> dict:
    from setuptools.config.pyprojecttoml import read_configuration

    return read_configuration(ROOT / "pyproject.toml", expand=True)["project"]


def test_the_import_collector_sees_lazy_and_nested_imports():
    source = "import os\nfrom . import x\ndef f():\n    import cv2\n    if True:\n        from PIL.Image import open\n"
    assert imported_modules(source) == {"os": True, "cv2": False, "PIL": False}


def test_every_module_the_engine_imports_is_a_declared_requirement():
    """What the engine imports must be in engine/requirements.txt, which the add-on installs; a module imported
    only inside functions may instead come from an optional extra of pyproject.toml (e.g. Ray for `cluster`)."""
    required = requirement_names(ENGINE / "requirements.txt")
    extras = {normalise(re.match(r"[A-Za-z0-9._-]+", line).group())
              for group, lines in pyproject()["optional-dependencies"].items() if group != "test" for line in lines}
    imports = third_party_imports()
    assert {"torch", "numpy", "cv2", "PIL", "onnxruntime", "OpenEXR"} <= set(imports)  # the collector works
    missing = {}
    for module, files in imports.items():
        distribution = normalise(DISTRIBUTIONS.get(module, module))
        eager = [file for file, at_module_level in files.items() if at_module_level]
        if distribution not in required and (eager or distribution not in extras):
            missing[module] = eager or list(files)
    assert not missing, f"imported by the engine but not in engine/requirements.txt: {missing}"


def test_every_requirement_is_pinned_to_the_tested_version():
    pins = requirement_names(ENGINE / "constraints.txt")
    for name in requirement_names(ENGINE / "requirements.txt"):
        assert name in pins and "==" in pins[name], f"engine/constraints.txt has no pin for {name}"


def test_pyproject_reads_its_dependencies_from_the_requirements_file():
    project = pyproject()
    assert "dependencies" in project["dynamic"]
    listed = [line for line in requirement_names(ENGINE / "requirements.txt").values()]
    assert project["dependencies"] == listed
    assert not (ROOT / "constraints.txt").exists(), "the pins live in engine/constraints.txt, shipped with the engine"
