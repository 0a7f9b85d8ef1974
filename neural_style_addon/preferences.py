"""Add-on preferences (per user, not per file) and where the add-on keeps its files.

The worker's interpreter, its default device and the weights cache are
machine facts, so they live here rather than in the scene.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import bpy
from bpy.props import EnumProperty, StringProperty

from .properties import DEVICE_ITEMS
from .worker_client import WorkerConfig, choose_python, imports_torch

# The add-on's id in Blender: `bl_ext.<repo>.neural_style` when installed as an
# extension (this package is one level below), `neural_style_addon` when imported directly.
ADDON_ID = __package__.removesuffix(".neural_style_addon")
# The folder that holds `engine/` and this package: the extension's root.
EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the worker imports; installed into the user directory by "Install Dependencies".
ENGINE_REQUIREMENTS = ("torch>=2.4", "numpy>=1.26,<2", "pillow>=10", "imageio>=2.31", "onnx>=1.16", "ml-dtypes<0.6")


def user_dir() -> str:
    """A writable per-user folder: the extension's user directory, or a config folder outside an extension."""
    if ADDON_ID.startswith("bl_ext."):
        return bpy.utils.extension_path_user(ADDON_ID, create=True)
    path = bpy.utils.user_resource("CONFIG", path=ADDON_ID, create=True) or os.path.join(tempfile.gettempdir(), ADDON_ID)
    os.makedirs(path, exist_ok=True)
    return path


def site_packages() -> str:
    return os.path.join(user_dir(), "site-packages")


def preferences(context=None) -> "NeuralStylePreferences | None":
    """This add-on's preferences, or None when it is registered without being enabled (tests, scripts)."""
    addon = (context or bpy.context).preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def worker_config(context=None) -> WorkerConfig:
    """How to start the worker, from the preferences and Blender's online-access setting."""
    prefs = preferences(context)
    paths = (EXTENSION_ROOT, site_packages())
    configured = bpy.path.abspath(prefs.python_path) if prefs and prefs.python_path else ""
    cache = bpy.path.abspath(prefs.cache_dir) if prefs and prefs.cache_dir else ""
    return WorkerConfig(choose_python(configured, paths), paths, offline=not bpy.app.online_access, cache_dir=cache)


def default_device(context=None) -> str:
    prefs = preferences(context)
    return prefs.device if prefs else "auto"


def install_command() -> list[str]:
    """pip into the user directory, so Blender's own Python stays untouched."""
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade",
            "--target", site_packages(), *ENGINE_REQUIREMENTS]


def start_install() -> subprocess.Popen:
    """Start installing the engine's dependencies; pip's output goes to Blender's console."""
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], capture_output=True)
    imports_torch.cache_clear()
    return subprocess.Popen(install_command())


class NeuralStylePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Worker Python", subtype="FILE_PATH",
        description="Python interpreter that runs the style engine; empty: Blender's own when it can import torch",
    )
    device: EnumProperty(
        name="Device",
        items=DEVICE_ITEMS,
        default="auto",
    )
    cache_dir: StringProperty(
        name="Weights Cache", subtype="DIR_PATH",
        description="Where model weights are kept; empty: the engine's default cache",
    )

    def draw(self, context) -> None:
        layout = self.layout
        layout.prop(self, "python_path")
        if not self.python_path:
            has_torch = imports_torch(sys.executable, (EXTENSION_ROOT, site_packages()))
            layout.label(
                text="Using Blender's Python" if has_torch else "Blender's Python has no torch: install or set one",
                icon="CHECKMARK" if has_torch else "ERROR",
            )
        layout.prop(self, "device")
        layout.prop(self, "cache_dir")
        row = layout.row()
        row.operator("neural_style.install_dependencies", icon="IMPORT")
        row.label(text=f"into {site_packages()}")
        if not bpy.app.online_access:
            layout.label(text="Online access is off: weights are not downloaded", icon="INFO")
