"""The operating-system rules (file names, paths, replacing files, starting processes, protocol lines): the
engine's `engine/os_rules.py` itself, loaded by its file path.

One copy serves both sides.  Blender's process never imports the `engine` package (it belongs to the worker's
interpreter, and a top-level `engine` on Blender's `sys.path` would be visible to every add-on), so this module
runs that one file, which imports only the standard library, and stands in for it: `from . import os_rules`
gives the add-on the same functions the engine uses.  The extension zip carries `engine/` beside this package.
"""

import importlib.util
import os
import sys

_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine", "os_rules.py")
_spec = importlib.util.spec_from_file_location(__name__, _SOURCE)
_rules = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _rules  # the import statement that loads this module hands out the rules module
_spec.loader.exec_module(_rules)
