"""Neural Style for Blender: registration only.

Modules: `properties` (scene settings), `operators`, `panels` (Image Editor
sidebar), `preferences`, `api` (scripts and render farms), `tasks` (the jobs),
`image_bridge` (pixels and colour), `materials`, `animation`, and
`worker_client`, the only door to the style engine, which runs in its own
process (docs/worker-protocol.md).  Nothing here imports torch.
"""

import bpy

from . import operators, panels, preferences, properties, worker_client

_classes = (preferences.NeuralStylePreferences, *operators.classes, *panels.classes)


def register() -> None:
    properties.register()
    for cls in _classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    operators.stop_running()
    worker_client.shutdown()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()
