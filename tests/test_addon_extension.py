"""The extension package: Blender's own validate and build, then install, enable, run and disable.

Install and enable run in a separate Python process with its own Blender user
folder: a fresh Blender that knows nothing of this test session's add-on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

import bpy

ROOT = Path(__file__).resolve().parents[1]
BLENDER_EXT = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"

INSTALL_AND_RUN = r"""
import json, os, sys
import bpy

zip_path, style_path = sys.argv[1:3]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.neural_style"
report = {"enabled": module in bpy.context.preferences.addons}
report["registered"] = [name for name in ("IMAGE_PT_neural_style", "IMAGE_PT_neural_style_advanced",
                        "IMAGE_OT_neural_style_apply", "IMAGE_OT_neural_style_animation")
                        if hasattr(bpy.types, name)]
report["preferences"] = sorted(bpy.context.preferences.addons[module].preferences.bl_rna.properties.keys())
report["has_settings"] = hasattr(bpy.context.scene, "neural_style")
addon = sys.modules[module + ".neural_style_addon"]
report["user_dir"] = addon.preferences.user_dir()
report["engine_root"] = addon.preferences.EXTENSION_ROOT

scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
scene.render.resolution_x, scene.render.resolution_y = 32, 24
bpy.ops.render.render()
settings = scene.neural_style
settings.weights = "random"  # plumbing check: the installed engine runs in the worker
settings.size, settings.iterations = 32, 2
settings.styles.add().filepath = style_path
report["apply"] = sorted(bpy.ops.image.neural_style_apply())
report["images"] = sorted(image.name for image in bpy.data.images)

bpy.ops.preferences.addon_disable(module=module)
report["disabled_clean"] = not hasattr(bpy.types, "IMAGE_PT_neural_style") and not hasattr(scene, "neural_style")
print("REPORT " + json.dumps(report))
"""


def blender_ext(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BLENDER_EXT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "neural_style.zip"
    done = blender_ext("build", "--source-dir", str(ROOT), "--output-filepath", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_manifest_passes_blenders_validate():
    done = blender_ext("validate", str(ROOT))
    assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr


def test_package_holds_the_addon_and_engine_only(package):
    names = zipfile.ZipFile(package).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"blender_manifest.toml", "__init__.py", "neural_style_addon", "engine"}
    assert "engine/worker.py" in names and "neural_style_addon/__init__.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_package_installs_enables_stylizes_and_disables(package, tmp_path):
    from addon_support import write_style

    style = write_style(tmp_path / "style.png")
    env = {**os.environ, "BLENDER_USER_RESOURCES": tempfile.mkdtemp(prefix="neural-style-install-")}
    done = subprocess.run([sys.executable, "-c", INSTALL_AND_RUN, str(package), str(style)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert report["enabled"] and report["has_settings"]
    assert len(report["registered"]) == 4
    assert {"python_path", "device", "cache_dir"} <= set(report["preferences"])
    # The worker ran the engine copied into the installed extension, not this checkout's.
    assert report["engine_root"].startswith(env["BLENDER_USER_RESOURCES"])
    assert "extensions" in report["user_dir"] and report["user_dir"].startswith(env["BLENDER_USER_RESOURCES"])
    assert report["apply"] == ["FINISHED"] and "Render (style)" in report["images"]
    assert report["disabled_clean"]
