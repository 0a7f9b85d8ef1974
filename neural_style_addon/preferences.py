"""Add-on preferences (per user, not per file) and where the add-on keeps its files.

The worker's interpreter, its default device and the weights cache are
machine facts, so they live here rather than in the scene.  Installing the
engine's packages is `dependencies`; this module only supplies Blender's side
(the paths, the interpreter, online access) and draws the state it reports.
"""

from __future__ import annotations

import os
import sys
import tempfile

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import dependencies, os_rules, package_sets, worker_client
from .properties import DEVICE_ITEMS
from .worker_client import WorkerConfig, WorkerError, choose_python, imports_torch

# The add-on's id in Blender: `bl_ext.<repo>.neural_style` when installed as an
# extension (this package is one level below), `neural_style_addon` when imported directly.
ADDON_ID = __package__.removesuffix(".neural_style_addon")
# The folder that holds `engine/` and this package: the extension's root.
EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The install started from the preferences (the panel shows its progress and offers Cancel).
installing: dependencies.Install | None = None


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


def _config(python: str, context=None) -> WorkerConfig:
    prefs = preferences(context)
    cache = bpy.path.abspath(prefs.cache_dir) if prefs and prefs.cache_dir else ""
    return WorkerConfig(python, (EXTENSION_ROOT, site_packages()), offline=not bpy.app.online_access, cache_dir=cache)


def configured_python(context=None) -> str:
    """The Worker Python set in the preferences (absolute), or "" for Blender's own."""
    prefs = preferences(context)
    return bpy.path.abspath(prefs.python_path) if prefs and prefs.python_path else ""


def worker_config(context=None) -> WorkerConfig:
    """How to start the worker, from the preferences and Blender's online-access setting."""
    return _config(choose_python(configured_python(context), (EXTENSION_ROOT, site_packages()), blender_python()),
                   context)


def install_config(context=None) -> WorkerConfig:
    """The worker's set-up without asking whether it has torch: the Python Install Dependencies serves."""
    python = configured_python(context)
    if python and not os.path.isfile(python):
        raise WorkerError(f"the worker Python set in the add-on preferences does not exist: {python}")
    return _config(python or blender_python(), context)


def blender_python() -> str:
    """Blender's own Python interpreter, wherever this Blender keeps it (`os_rules.blender_python`)."""
    return os_rules.blender_python(sys.executable, bpy.utils.resource_path("LOCAL"))


def default_device(context=None) -> str:
    prefs = preferences(context)
    return prefs.device if prefs else "auto"


def ray_address(context=None) -> str:
    """The Ray cluster Stylize Animation submits shots to; "" = frames are stylized by this machine's worker."""
    prefs = preferences(context)
    return prefs.ray_address.strip() if prefs else ""


def ray_token_file(context=None) -> str:
    """The Ray cluster's token file; "" = where Ray looks (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    prefs = preferences(context)
    return bpy.path.abspath(prefs.ray_token_file.strip()) if prefs and prefs.ray_token_file.strip() else ""


def package_choice(context=None) -> package_sets.Choice:
    """The package set Install Dependencies installs on this machine, and why (`package_sets.choose`)."""
    prefs = preferences(context)
    return package_sets.for_this_machine(cpu_only=bool(prefs and prefs.cpu_only))


def _chosen_set(context=None) -> tuple[list[str], str]:
    """The lock files to install (this machine's set, with its cluster lock where a Ray Cluster is set) and the
    index its torch comes from; DependencyError when no set fits this machine."""
    chosen = package_choice(context).package_set
    if chosen is None:
        raise dependencies.DependencyError(package_choice(context).reason)
    prefs = preferences(context)
    index = chosen.index_url(prefs.torch_index.strip() if prefs else "")
    return chosen.locks(cluster=bool(ray_address(context))), index


def install_command(context=None) -> list[str]:
    """What Install Dependencies runs: pip with the worker's Python, the lock of this machine's package set (and
    Ray's where a Ray Cluster is set), into a staging folder beside the user folder's site-packages, so Blender's
    own Python stays untouched."""
    locks, index = _chosen_set(context)
    return dependencies.install_command(install_config(context).python, dependencies.staging_folder(site_packages()),
                                        locks, index)


def install_dependencies(context=None) -> dependencies.Install:
    """Start Install Dependencies (pip on a thread, then the worker's import check).

    Poll the result's `status`/`finished`, or call `.wait()`, which raises
    StyleError with what failed.  Refused at once when online access is off.
    """
    global installing
    if installing is not None and not installing.finished:
        raise dependencies.DependencyError("Install Dependencies is already running")
    config = install_config(context)
    if not bpy.app.online_access:
        raise dependencies.DependencyError(dependencies.OFFLINE)
    locks, index = _chosen_set(context)
    installing = dependencies.Install(config, site_packages(), locks, bpy.app.online_access, index)
    worker_client.shutdown()  # it may use the packages pip replaces when it has finished
    dependencies.forget_probes()
    imports_torch.cache_clear()
    return installing


def _redraw_when_probed():
    """Timer: redraw the Preferences window once the background probe has an answer."""
    if dependencies.probing() or package_sets.asking() or (installing is not None and not installing.finished):
        return 0.5
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    return None


class NeuralStylePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Worker Python", subtype="FILE_PATH",
        description="Python interpreter that runs the style engine; empty: Blender's own when it can import torch",
    )
    cpu_only: BoolProperty(
        name="CPU-Only Packages",
        description="Install Dependencies installs torch without GPU support even where a supported NVIDIA GPU is "
                    "found: 2 to 2.5 GB less to download, but stylizing is many times slower",
    )
    torch_index: StringProperty(
        name="PyTorch Index",
        description="The package index of the torch builds PyPI does not have (CUDA builds for Windows, CPU-only "
                    "builds for Linux), e.g. a studio's mirror; empty: " + package_sets.TORCH_INDEX,
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
    ray_address: StringProperty(
        name="Ray Cluster",
        description="Stylize Animation submits the whole shot to this Ray cluster (HOST:PORT, 'auto' or 'local'); "
                    "the frames folder must be storage every node sees. Empty: this machine stylizes every frame",
    )
    ray_token_file: StringProperty(
        name="Ray Token File", subtype="FILE_PATH",
        description="The cluster's authentication token (what `ray get-auth-token` prints on the head node, saved "
                    "in a file); empty: where Ray looks (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)",
    )

    def draw(self, context) -> None:
        """Only reads state: the probe of the worker's Python runs on a thread (see `dependencies.probe`)."""
        layout = self.layout
        layout.prop(self, "python_path")
        try:
            state = dependencies.probe(install_config(context))
        except WorkerError as exc:
            state = dependencies.Probe(False, str(exc))
        if state.ok is None and not bpy.app.timers.is_registered(_redraw_when_probed):
            bpy.app.timers.register(_redraw_when_probed, first_interval=0.5)
        if state.ok and not self.python_path:
            layout.label(text="Using Blender's Python", icon="CHECKMARK")
        layout.label(text=state.text, icon={None: "TIME", True: "CHECKMARK", False: "ERROR"}[state.ok])
        layout.prop(self, "device")
        layout.prop(self, "cache_dir")
        layout.prop(self, "ray_address")
        if self.ray_address.strip():
            layout.prop(self, "ray_token_file")
            if state.ok and "ray" not in state.modules:
                layout.label(text="Ray is not installed for the worker: click Install Dependencies to add it",
                             icon="ERROR")
        row = layout.row()
        if installing is not None and not installing.finished:
            row.label(text=f"Installing: {installing.status.text}", icon="TIME")
            row.operator("neural_style.install_dependencies_cancel", icon="CANCEL")
        else:
            row.operator("neural_style.install_dependencies", icon="IMPORT")
            row.label(text=f"into {site_packages()}")
            if installing is not None and installing.error:
                layout.label(text=f"Last install failed: {installing.error}", icon="ERROR")
        _draw_package_set(self, context)
        if not bpy.app.online_access:
            layout.label(text="Online access is off: no package installs or weight downloads", icon="INFO")


def _draw_package_set(prefs, context) -> None:
    """What Install Dependencies installs here and why, with its download size; the choices that change it."""
    layout = prefs.layout
    choice = package_sets.for_this_machine_soon(cpu_only=bool(prefs.cpu_only))
    if choice is None:  # nvidia-smi is being asked on a thread: drawing never waits for it
        layout.label(text="Finding this machine's GPU...", icon="TIME")
        if not bpy.app.timers.is_registered(_redraw_when_probed):
            bpy.app.timers.register(_redraw_when_probed, first_interval=0.5)
        return
    if choice.package_set is None:
        layout.label(text=choice.reason, icon="ERROR")
        return
    layout.label(text=package_sets.plan(choice, cluster=bool(prefs.ray_address.strip())), icon="INFO")
    if choice.package_set.platform != "macos-arm64":
        layout.prop(prefs, "cpu_only")
    if choice.package_set.torch_build:
        layout.prop(prefs, "torch_index")
