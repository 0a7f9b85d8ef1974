"""How much memory a run may use, what a network needs per pixel, and out-of-memory detection.

The memory model: bytes per input pixel = factor * 4 * (floats of all module
outputs per input pixel, see `NetGeometry.floats_per_pixel`) + optimiser state.
Calibrated on CPU from the peak-memory slope between 512 and 1024 px in
`python -m benchmarks.bench` (docs/benchmarks.md, "Memory model"): optimising measured
0.97-1.14 x (vgg19, vgg16, nin); target forward passes 0.31-0.48 x (torch) and
0.36 x (onnxruntime).  The factors round those up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from .networks import FeatureNet
from .options import StyleOptions

# Smallest tile tried; below this the net's deepest layers see only a few pixels.
MIN_TILE = 64
OPTIMIZE_FACTOR = 1.2
FORWARD_FACTOR = 0.5
# Allocator slack, weights and interpreter state not proportional to the image.
FIXED_BYTES = 600 * 2**20
# L-BFGS keeps 2 x history_size (50 in `optimize_image`) image-sized vectors plus ~6 work
# vectors; Adam keeps 2 moments plus the gradient.
OPTIMIZER_STATE_VECTORS = {"lbfgs": 2 * 50 + 6, "adam": 4}
# Share of the free memory a run plans to use; the rest absorbs estimate error and other users.
BUDGET_FRACTION = 0.6


@dataclass(frozen=True)
class NetGeometry:
    """What memory planning and tiling need to know about a (truncated) feature network."""

    floats_per_pixel: float  # sum over module outputs of channels / stride^2
    stride: int  # downsampling of the deepest module
    receptive_field: int  # input pixels seen by one output of the deepest module
    layer_strides: dict[str, int]  # downsampling at each named layer


def geometry(net: FeatureNet) -> NetGeometry:
    channels, stride, field_, floats = 3, 1, 1, 0.0
    strides: dict[str, int] = {}
    for name, module in zip(net.spec.layer_names, net.features):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, step = _pair(module.kernel_size), _pair(module.stride)
            field_ += (kernel - 1) * stride
            stride *= step
            channels = module.out_channels if isinstance(module, nn.Conv2d) else channels
        floats += channels / stride**2
        strides[name] = stride
    return NetGeometry(floats, stride, field_, strides)


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def bytes_per_pixel(geo: NetGeometry, optimizer: str | None) -> float:
    """Estimated peak bytes per input pixel: optimising (`optimizer` set) or a no-grad forward."""
    if optimizer is None:
        return FORWARD_FACTOR * 4 * geo.floats_per_pixel
    return OPTIMIZE_FACTOR * 4 * geo.floats_per_pixel + 4 * 3 * OPTIMIZER_STATE_VECTORS[optimizer]


def free_memory(device: torch.device) -> int:
    """Bytes this process could still allocate on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux (macOS has no /proc): free pages, else half of all memory
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def memory_budget(device: torch.device, options: StyleOptions) -> int:
    """Bytes a run plans to use: a share of what is free, capped by `options.memory_limit_mb`."""
    budget = int(free_memory(device) * BUDGET_FRACTION)
    if options.memory_limit_mb > 0:
        budget = min(budget, options.memory_limit_mb * 2**20)
    return budget


def fits(budget: int, geo: NetGeometry, pixels: float, optimizer: str | None) -> bool:
    """Whether optimising (`optimizer` set) or a forward pass over `pixels` input pixels fits `budget`."""
    return FIXED_BYTES + pixels * bytes_per_pixel(geo, optimizer) <= budget


def tile_for_budget(budget: int, geo: NetGeometry, optimizer: str) -> int:
    """Largest square tile side (a multiple of the net's stride) whose optimisation fits `budget`."""
    side = math.isqrt(max(budget - FIXED_BYTES, 0) // math.ceil(bytes_per_pixel(geo, optimizer)))
    return max(MIN_TILE, side // geo.stride * geo.stride)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors on any device (CUDA, MPS, CPU allocator)."""
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in message or "not enough memory" in message
