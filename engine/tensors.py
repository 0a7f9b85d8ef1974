"""Devices, mixed precision, and the array <-> tensor boundary of the engine.

Arrays are HxWxC float32 sRGB in [0, 1]; tensors are 1x3xHxW on the run's
device.  `check_image` is the one validation every array passes on its way in.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from typing import Callable

import numpy as np
import torch

from .errors import EngineError

Autocast = Callable[[], torch.autocast]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """The devices this torch build can use here, in the order "auto" tries them, CPU last."""
    found = ["cuda"] if torch.cuda.is_available() else []
    return found + (["mps"] if _mps_available() else []) + ["cpu"]


def pick_device(name: str) -> torch.device:
    """The run's device.  "auto" takes the first of: CUDA (an NVIDIA GPU this torch build was made for, with a
    working driver; the first visible one, so CUDA_VISIBLE_DEVICES chooses), MPS (the GPU of an Apple silicon
    Mac, macOS 12.3 or newer, with torch's MPS build) and the CPU.  An explicit device must be available."""
    if name == "auto":
        return torch.device(available_devices()[0])
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA GPU is available to this PyTorch build")
    if name == "mps" and not _mps_available():
        raise EngineError("device 'mps' requested but Metal is not available")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A one-line name for reports, e.g. "cuda: NVIDIA H200 (compute capability 9.0)"."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if device.type == "mps":
        return f"mps: Apple GPU (macOS {platform.mac_ver()[0] or 'unknown'})"
    return f"cpu: {cpu_name()}, {torch.get_num_threads()} threads, {_cpu_capability()}"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def resolve_precision(device: torch.device, precision: str) -> str:
    """The precision a run of `precision` uses on `device`: "auto" is bf16 on a CPU with bf16 arithmetic (the
    same picture at 1.8x the iterations per CPU second, docs/engine.md "Devices and precision") and fp32
    everywhere else (GPUs stay fp32 until benchmarks/gpu.py has judged their bf16 and fp16); any other value as
    given."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def precision_problem(device: torch.device, precision: str) -> str | None:
    """Why `precision` is not offered on `device` (one sentence), or None where it is ("auto" always is).

    Reduced precision runs only the network's layers under autocast; Gram matrices, losses, the image and
    L-BFGS's state stay in fp32 everywhere (engine/optimize.py, engine/targets.py), so it is offered wherever
    the device has native arithmetic for it and refused where it would be emulated (slower than fp32):
    fp16 on a CPU; bf16 on a CPU without AVX-512 BF16, AMX or Arm BF16 instructions; bf16 on an NVIDIA GPU
    older than Ampere (compute capability 8.0); bf16 on an Apple GPU before macOS 14.
    """
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return None
    if device.type == "cpu":
        if precision == "fp16":
            return "fp16 needs a GPU (CUDA or Apple MPS); use fp32 on the CPU"
        if not cpu_has_bf16():
            return (f"bf16 would be slower than fp32 on this CPU ({_cpu_capability()}: no AVX-512 BF16, AMX or Arm "
                    "BF16 instructions); use fp32")
    if device.type == "cuda" and precision == "bf16":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return (f"bf16 needs an NVIDIA GPU of compute capability 8.0 (Ampere) or newer, this one is {major}.{minor}; "
                    "use fp16")
    if device.type == "mps" and precision == "bf16" and not _macos_at_least(14):
        return "bf16 on an Apple GPU needs macOS 14 or newer; use fp16"
    return None


def autocast_factory(device: torch.device, precision: str) -> Autocast:
    """A no-argument factory of the autocast context for "auto", "fp32", "fp16" or "bf16" on `device`; a
    precision the device has no native arithmetic for is refused (`precision_problem`)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return lambda: torch.autocast(device.type, enabled=False)
    problem = precision_problem(device, precision)
    if problem:
        raise EngineError(problem)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device.type, dtype=dtype)


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (x86 AVX-512 BF16 or AMX, Arm BF16), from /proc/cpuinfo or sysctl."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = {word for line in fh if line.split(":")[0].strip() in ("flags", "Features")
                     for word in line.split(":", 1)[1].split()}
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout
            return out.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    return False


def _cpu_capability() -> str:
    getter = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return getter() if getter else "unknown vector unit"


def _macos_at_least(major: int) -> bool:
    check = getattr(torch.backends.mps, "is_macos_or_newer", None)
    if check is not None:
        return bool(check(major, 0))
    version = platform.mac_ver()[0]
    return bool(version) and int(version.split(".")[0]) >= major


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3/4 array -> 1x3xHxW tensor (alpha dropped)."""
    return torch.from_numpy(np.ascontiguousarray(image[..., :3].transpose(2, 0, 1))).unsqueeze(0).to(device)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """1x3xHxW tensor -> HxWx3 float32 array, clipped to [0, 1]."""
    return tensor.detach().squeeze(0).clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()


def check_image(name: str, image: np.ndarray) -> np.ndarray:
    """`image` as HxWx3/4 float32 in [0, 1]; one clear error for any other shape or non-finite values."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise EngineError(f"{name} must be an HxWx3 or HxWx4 array, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise EngineError(f"{name} contains NaN or infinite values")
    return np.clip(image.astype(np.float32), 0, 1)
