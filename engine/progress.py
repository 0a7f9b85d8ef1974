"""What a run reports each step, and how callers cancel it.

`Progress` is plain, structured data plus one lazy accessor (`image()`), so
reporting costs nothing unless a caller actually wants a preview.  Consumers
read the fields; `stage` is only a human label derived from them.  `Reporter`
holds one run's counters and where the run is (scale, tile); producers move it
through its methods, never by editing a shared string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import Cancelled

ProgressFn = Callable[["Progress"], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class Progress:
    iteration: int  # 1-based step, counted over all scales/tiles/passes (and frames) of the run
    total: int  # steps the whole run will take
    losses: dict[str, float]  # "content", "style", "tv", "total" (and "temporal" when used)
    elapsed: float  # seconds since the run started
    kind: str = "optimize"  # "optimize", "train" (fast-mode training) or "frame" (one report per frame)
    scale: int = 0  # 1-based coarse-to-fine scale, 0 when not applicable
    scales: int = 0
    tile: int = 0  # 1-based tile within the current pass, 0 when untiled
    tiles: int = 0
    tile_size: int = 0  # tile side in pixels when tiled
    tile_pass: int = 0  # 1-based pass over the (shifted) tile grid, 0 when untiled
    tile_passes: int = 0
    width: int = 0  # size being optimised at this step
    height: int = 0
    frame: int = 0  # 1-based frame of a sequence, 0 when not applicable
    frames: int = 0
    # Steps of `total` the convergence stop skipped so far (engine/optimize.py, `StopRule`): `iteration` counts
    # them as done, so the run still ends at `total`; `iteration - saved` steps actually ran.
    saved: int = 0
    image: Callable[[], np.ndarray | None] = field(default=lambda: None, repr=False, compare=False)  # HxWx3 sRGB

    @property
    def stage(self) -> str:
        """A human label for status lines, e.g. "frame 2 of 5, scale 1/3 (240x135), tile 4/9, pass 1/2"."""
        parts = [f"frame {self.frame} of {self.frames}"] if self.frame else []
        if self.kind == "train":
            parts.append("training")
        if self.scales > 1:
            parts.append(f"scale {self.scale}/{self.scales} ({self.width}x{self.height})")
        elif self.width:
            parts.append(f"{self.width}x{self.height}")
        if self.tile:
            parts.append(f"tile {self.tile}/{self.tiles}, pass {self.tile_pass}/{self.tile_passes}")
        return ", ".join(parts)

    @property
    def ran(self) -> int:
        """Optimiser steps that actually ran (the convergence stop's skipped ones not counted)."""
        return self.iteration - self.saved

    @property
    def saved_seconds(self) -> float:
        """Seconds the skipped steps would have taken at this run's pace so far (an estimate)."""
        return self.saved * self.elapsed / max(self.ran, 1)

    @property
    def saved_label(self) -> str:
        """"" or e.g. "stopped early: 120 iterations (~45 s) saved", for progress lines."""
        if not self.saved:
            return ""
        return f"stopped early: {self.saved} iterations (~{self.saved_seconds:.0f} s) saved"


class Reporter:
    """Counts steps across the whole run, reports progress and honours cancellation."""

    def __init__(self, total: int, progress: ProgressFn | None, cancel: CancelFn | None, kind: str = "optimize"):
        self.total = total
        self.count = 0
        self.start = time.perf_counter()
        self.progress = progress
        self.cancel = cancel
        self.kind = kind
        self.saved = 0
        self.last_losses: dict[str, float] = {}
        self._scale: dict[str, int] = {}
        self._tile: dict[str, int] = {}

    def at_scale(self, index: int, count: int, height: int, width: int) -> None:
        """The run moves to scale `index` (1-based) of `count`, optimised at height x width."""
        self._scale = {"scale": index, "scales": count, "height": height, "width": width}
        self._tile = {}

    def at_tile(self, index: int, count: int, size: int, pass_index: int, passes: int) -> None:
        """The run moves to tile `index` (1-based) of `count` in pass `pass_index` of `passes`."""
        self._tile = {"tile": index, "tiles": count, "tile_size": size, "tile_pass": pass_index, "tile_passes": passes}

    def tile_finished(self, index: int) -> None:
        """Tiles of the current pass that ran elsewhere at once: `index` of them are done."""
        self._tile = {**self._tile, "tile": index}

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")

    def step(self, losses: dict[str, float], image_fn: Callable[[], np.ndarray | None], steps: int = 1,
             skipped: int = 0) -> None:
        """`steps` optimiser steps have run (more than one when a whole tile ran elsewhere, e.g. on a Ray node),
        and the convergence stop skipped the `skipped` steps planned after them: they count as done and saved."""
        self.count += steps + skipped
        self.saved += skipped
        self.last_losses = losses
        if self.progress is not None:
            elapsed = time.perf_counter() - self.start
            self.progress(Progress(
                self.count, self.total, losses, elapsed, kind=self.kind, **self._scale, **self._tile,
                saved=self.saved, image=image_fn,
            ))
        self.check_cancel()
