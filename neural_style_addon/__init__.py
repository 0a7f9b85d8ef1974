"""Neural Style for Blender: registration only.

Modules: `properties` (scene settings), `operators`, `panels` (Image Editor
sidebar), `preferences`, `api` (scripts and render farms), `job` (what a run is
asked), `runner` (drives a run), `tasks` (the runs' steps),
`image_bridge` (pixels and colour), `materials`, `animation`, and
`worker_client`, the only door to the style engine, which runs in its own
process (docs/worker-protocol.md).  Nothing here imports torch.
"""

import atexit

import bpy

from . import operators, panels, preferences, properties, worker_client
from . import material_textures

_classes = (preferences.NeuralStylePreferences, *operators.classes, *panels.classes,
            *material_textures.classes)


@bpy.app.handlers.persistent
def _before_load(*_args) -> None:
    """A new .blend is opening: the running job belongs to the file being closed."""
    operators.stop_running()


def _at_exit() -> None:
    """Blender (or the `bpy` module's Python) is quitting: stop the job, then the worker."""
    operators.stop_running()
    worker_client.shutdown()


def register() -> None:
    properties.register()
    material_textures.register()
    for cls in _classes:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_pre.append(_before_load)
    atexit.register(_at_exit)


def unregister() -> None:
    atexit.unregister(_at_exit)
    if _before_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_before_load)
    operators.stop_running()
    worker_client.shutdown()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    material_textures.unregister()
    properties.unregister()
