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
import sys
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
# vectors and the best image so far (`optimize.Best`); Adam keeps 2 moments plus the gradient.
OPTIMIZER_STATE_VECTORS = {"lbfgs": 2 * 50 + 7, "adam": 4}
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
    """Bytes this process could still allocate on `device`.

    CUDA: the driver's free memory plus what torch's allocator holds unused.  MPS: Metal's recommended
    working set less what the driver has allocated, and no more than the system has free (Apple silicon
    shares one memory between CPU and GPU).  CPU: the system's available memory.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)  # torch >= 2.3
        if recommended is None:
            return _system_free()
        return max(0, min(recommended() - torch.mps.driver_allocated_memory(), _system_free()))
    return _system_free()


def _system_free() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux: Windows asks the kernel; macOS free pages, else half of all memory
        pass
    if sys.platform == "win32":
        return _windows_available()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def _windows_available() -> int:
    """Available physical memory on Windows (GlobalMemoryStatusEx; os.sysconf does not exist there)."""
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                    ("available", ctypes.c_ulonglong), ("page_total", ctypes.c_ulonglong),
                    ("page_available", ctypes.c_ulonglong), ("virtual_total", ctypes.c_ulonglong),
                    ("virtual_available", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.length = ctypes.sizeof(MemoryStatus)
    ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
    return int(status.available)


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


def release_cache(device: torch.device) -> None:
    """Give memory torch's allocator keeps for reuse back to the device (after an out-of-memory error)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


class PeakMemory:
    """Peak memory of this process's work on `device` since `reset()`, in bytes.

    CUDA: the allocator's peak (`torch.cuda.max_memory_allocated`).  MPS: Metal keeps no peak, so the driver's
    allocation is sampled at every `sample()` (call it once per iteration).  CPU: the process's peak resident
    memory, VmHWM on Linux (reset through /proc/self/clear_refs), else `ru_maxrss`, which cannot be reset.
    `base` is what was in use at the reset; `peak() - base` is what the measured work added.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        self._sampled = 0

    @property
    def kind(self) -> str:
        return {"cuda": "CUDA allocator peak", "mps": "Metal driver allocation, sampled each iteration"}.get(
            self.device.type, "process peak resident memory")

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass
        self.base = self.current()
        self._sampled = self.base

    def sample(self) -> None:
        if self.device.type == "mps":
            self._sampled = max(self._sampled, self.current())

    def current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        if self.device.type == "mps":
            return torch.mps.driver_allocated_memory()
        return _status_bytes("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.device.type == "mps":
            self.sample()
            return self._sampled
        return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status; without /proc, the peak (`ru_maxrss`)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows: no portable figure without extra packages
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak if sys.platform == "darwin" else peak * 1024


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors on any device (CUDA, MPS, CPU allocator)."""
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in message or "not enough memory" in message
