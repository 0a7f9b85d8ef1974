"""How long fast-mode training will take here: measured steps times the step count, before training starts.

A training step's cost depends on the machine, its load, the crop, the batch and
the network's size, so the estimate times real steps (the loss network, the
transformation network and Adam, on random crops) rather than guessing from a
table.  `estimate_training_seconds` is what a UI shows ("about 4 minutes");
`training_seconds` turns a step time measured once into estimates for other
step counts or crops without measuring again.
"""

from __future__ import annotations

import time

import torch

from .. import losses
from ..model import prepare_network
from ..options import StyleOptions
from .net import TransformerNet
from .options import FastOptions
from .training import training_step

# Work besides the steps: loading the network and frames, the style's Grams (first run: exporting the loss
# network to ONNX) and exporting the result.  One default run on the shared 2-core CPU (load 4.5) spent
# about 370 s of its 628 s outside its 300 steps (docs/benchmarks.md); unloaded it is a fraction of that.
FIXED_SECONDS = 60.0


def seconds_per_step(options: StyleOptions | None = None, fast: FastOptions | None = None, repeats: int = 2) -> float:
    """Seconds of one training step with these options on their device: one warm-up step, then the fastest of
    `repeats` (the least disturbed by other work)."""
    options = options or StyleOptions()
    fast = fast or FastOptions()
    net, plan, device = prepare_network(options)
    generator = torch.Generator().manual_seed(0)
    crops = torch.rand(fast.batch_size, 3, fast.crop, fast.crop, generator=generator).to(device)
    with torch.no_grad():
        features = net(crops[:1], plan.style)
    grams = {name: losses.gram(f) for name, f in features.items()}
    transformer = TransformerNet(fast.width, fast.residual_blocks).to(device)
    optimizer = torch.optim.Adam(transformer.parameters(), lr=fast.learning_rate)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        training_step(transformer, net, optimizer, crops, grams, options, plan)
        _sync(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def training_seconds(fast: FastOptions, step_seconds: float, measured: FastOptions | None = None) -> float:
    """Expected seconds to train with `fast`, given one step took `step_seconds` with `measured` (default: `fast`).

    A step's cost grows with the pixels it processes (batch x crop^2), so a time
    measured at one crop or batch scales to another.
    """
    measured = measured or fast
    pixels = fast.batch_size * fast.crop**2 / (measured.batch_size * measured.crop**2)
    return FIXED_SECONDS + fast.steps * step_seconds * pixels


def estimate_training_seconds(options: StyleOptions | None = None, fast: FastOptions | None = None) -> float:
    """Measure a step and return the expected seconds of `train(..., options, fast)` on this machine."""
    fast = fast or FastOptions()
    return training_seconds(fast, seconds_per_step(options, fast))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
