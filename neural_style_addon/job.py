"""What a run is asked to do: plain data, gathered and checked before any work starts (see `api.build_job`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import bpy

    from .animation import FrameInput


@dataclass
class Status:
    """What the UI shows about a running task: a line of text and the share done."""

    text: str
    fraction: float = 0.0
    label: str = ""  # the part of the run it belongs to ("Frame 2 of 5: "), empty for a single image


@dataclass
class Style:
    name: str
    pixels: np.ndarray
    weight: float = 1.0
    # What the style is limited to: (Cryptomatte kind "object"/"material", names); None = everywhere (see mattes).
    limit: tuple[str, tuple[str, ...]] | None = None


@dataclass
class Job:
    """Everything one run needs."""

    styles: list[Style]
    options: dict  # engine.StyleOptions fields (as JSON)
    source: str = "RENDER"  # RENDER, IMAGE or SEQUENCE
    image: bpy.types.Image | None = None
    sequence_dir: str = ""
    target: str = "IMAGE"  # IMAGE, FILE or TEXTURE
    filepath: str = ""
    obj: bpy.types.Object | None = None
    preview_every: int = 10
    # Animation only.
    out_dir: str = ""
    frames: list[int] = field(default_factory=list)
    load_sequence: bool = False
    add_strip: bool = False
    existing_frames: str = "RESUME"  # RESUME (keep frames made with the same settings) or OVERWRITE
    frame_options: Callable[[FrameInput], dict] | None = None
    # engine.temporal.TemporalOptions fields (as JSON); None or enabled False: frames are independent.
    temporal: dict | None = None
    animation_mode: str = "OPTIMIZE"  # OPTIMIZE or FAST (train once, apply per frame)
    fast: dict | None = None  # engine.fast.options.FastOptions fields (as JSON)
    # A Ray cluster's address ("local", "auto" or host:port; "" = this machine's worker does every frame):
    # the rendered shot is submitted there as one job (docs/distributed.md); out_dir must be shared storage.
    ray_address: str = ""
    ray_token_file: str = ""  # the cluster's token; "" = where Ray looks
    # Style scale at the farthest depth relative to the nearest (1: off; see mattes.py and engine/regions.py).
    depth_scale: float = 1.0
