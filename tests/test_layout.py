"""The code's layout: no import cycles (lazy imports included) and the layering rules.

Imports are read with `ast`, not by importing, so a cycle hidden inside a
function body (a lazy import) counts like one at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "neural_style_addon")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in (ROOT / package).rglob("*.py")}


def imported(path: Path, name: str, known: set[str] = frozenset()) -> set[str]:
    """Every module `path` imports anywhere in its body, as absolute dotted names.

    `from pkg import x` counts as importing `pkg.x` where that is one of the `known` modules,
    else as importing `pkg` (x is then a name defined by pkg's `__init__`).
    """
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                submodule = f"{prefix}.{alias.name}"
                found.add(submodule if submodule in known else prefix)
    return found


def graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: {t for t in imported(path, name, set(mods)) if t in mods and t != name} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of module names, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(edges):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges[child]))))
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycle = find_cycle(graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_lazy_imports(tmp_path, monkeypatch):
    """The checker itself: a cycle closed by an import inside a function is found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import g\n")
    (package / "b.py").write_text("def g():\n    from . import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert find_cycle(graph("pkg")) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(graph("pkg")) is None


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("engine", ("bpy", "neural_style_addon")), ("neural_style_addon", ("torch", "engine", "onnxruntime", "cv2"))],
)
def test_layering(package, forbidden):
    """engine/ never imports Blender; the add-on never imports torch or the engine (it talks to the worker)."""
    offenders = []
    for name, path in modules(package).items():
        for target in imported(path, name):
            if target.split(".")[0] in forbidden:
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


def test_no_development_tools_in_shipped_packages():
    """Benchmarks and demo scenes live in benchmarks/, outside the engine and the extension."""
    shipped = [*modules("engine"), *modules("neural_style_addon")]
    tools = [name for name in shipped if name.rsplit(".", 1)[-1].startswith(("bench", "demo"))]
    assert not tools, tools
