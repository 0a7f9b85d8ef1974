"""Settings of fast-mode training, validated once; no torch, so hosts can build them.

The style itself (loss network, layers, loss weights, style scale, seed) comes
from `StyleOptions`; these fields say how the transformation network is shaped
and trained.  The defaults keep CPU training to minutes (see
docs/onnx-and-fast-mode.md); a GPU affords `crop=256, batch_size=4, steps=2000,
width="default", residual_blocks=5`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EngineError
from ..options import JsonOptions

# Temporal coherence of fast-mode sequences: the share of the previous result (warped along the motion) mixed
# into pixels whose content did not change (engine.temporal.blend_previous; measured in benchmarks/bench_fast.py).
SEQUENCE_BLEND = 0.5
# Channels of the three resolutions of the transformation network.
WIDTHS = {"default": (32, 64, 128), "small": (16, 32, 64)}


@dataclass(frozen=True)
class FastOptions(JsonOptions):
    _label = "fast-mode option"

    # CPU-sized defaults (issue 12: a clearly stylized model in minutes on a 2-core CPU, not 20 minutes):
    # 128 px crops hold a quarter of the pixels of 256 px ones, and the small width with 3 residual
    # blocks is about 4x cheaper than default/5; engine/fast/estimate.py says how long it will take.
    steps: int = 300
    crop: int = 128  # side of the square training crops (windows of the frames at the output size)
    batch_size: int = 2
    width: str = "small"  # "default" 32/64/128 channels, "small" 16/32/64 (about 4x faster)
    residual_blocks: int = 3
    learning_rate: float = 1e-3
    max_images: int = 64  # frames beyond this are subsampled evenly

    def __post_init__(self) -> None:
        if self.width not in WIDTHS:
            raise EngineError(f"unknown width {self.width!r}; choose one of: {', '.join(WIDTHS)}")
        if self.steps < 1:
            raise EngineError(f"steps must be at least 1, got {self.steps}")
        if not 32 <= self.crop <= 1024 or self.crop % 4:
            raise EngineError(f"crop must be a multiple of 4 between 32 and 1024, got {self.crop}")
        for name in ("batch_size", "residual_blocks", "max_images"):
            if getattr(self, name) < 1:
                raise EngineError(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            raise EngineError("learning_rate must be positive")

