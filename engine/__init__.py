"""Neural style transfer engine (Gatys et al.) with VGG-19, VGG-16 and NIN.

Public API: `stylize(content, styles, options, progress=None, cancel=None)`
takes and returns float32 HxWxC sRGB arrays in [0, 1]; torch tensors never
leave the engine.  Image-file helpers live in `engine.images`.
"""

from .errors import Cancelled, EngineError
from .options import StyleOptions
from .progress import Progress

__all__ = ["stylize", "StyleOptions", "Progress", "EngineError", "Cancelled"]


def stylize(content, styles, options=None, progress=None, cancel=None):
    """Stylize `content` (HxWx3/4 float32 sRGB) with `styles` (list of HxWx3/4 arrays).

    Imported lazily so `import engine` (e.g. by the worker before a job arrives)
    does not pay for torch start-up.
    """
    from .pipeline import stylize as _stylize

    return _stylize(content, styles, options or StyleOptions(), progress=progress, cancel=cancel)
