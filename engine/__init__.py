"""Neural style transfer engine (Gatys et al.) with VGG-19, VGG-16 and NIN.

Public API: `stylize(content, styles, options, progress=None, cancel=None, regions=None)`
takes and returns float32 HxWxC sRGB arrays in [0, 1]; torch tensors never
leave the engine.  `regions` (`engine.regions.Region`: a mask and its styles)
give parts of the picture their own styles.  Image-file helpers live in `engine.images`.
"""

from .errors import Cancelled, EngineError
from .options import StyleOptions
from .progress import Progress

__all__ = ["stylize", "StyleOptions", "Progress", "EngineError", "Cancelled"]


def stylize(content, styles, options=None, progress=None, cancel=None, regions=None):
    """Stylize `content` (HxWx3/4 float32 sRGB) with `styles` (list of HxWx3/4 arrays).

    `regions`: optional list of `engine.regions.Region`, each a soft HxW mask with the indices of its
    styles in `styles` (none: that part stays as the content).

    Imported lazily so `import engine` (e.g. by the worker before a job arrives)
    does not pay for torch start-up.
    """
    from .pipeline import stylize as _stylize

    return _stylize(content, styles, options or StyleOptions(), progress=progress, cancel=cancel, regions=regions)
