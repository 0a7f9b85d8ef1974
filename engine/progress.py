"""What the optimisation reports each iteration, and how callers cancel it.

`Progress` is plain data plus one lazy accessor (`image()`), so reporting
costs nothing unless a caller actually wants a preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ProgressFn = Callable[["Progress"], None]
CancelFn = Callable[[], bool]


@dataclass
class Progress:
    iteration: int  # 1-based, counted over all scales/tiles/passes of the run
    total: int  # iterations the whole run will take
    losses: dict[str, float]  # "content", "style", "tv", "total" (and "temporal" when used)
    elapsed: float  # seconds since the run started
    stage: str = ""  # e.g. "scale 2/3" or "tile 4/9"
    image: Callable[[], np.ndarray] = field(default=lambda: None, repr=False)  # current result, HxWx3 sRGB
