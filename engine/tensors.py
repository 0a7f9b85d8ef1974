"""Devices, mixed precision, and the array <-> tensor boundary of the engine.

Arrays are HxWxC float32 sRGB in [0, 1]; tensors are 1x3xHxW on the run's
device.  `check_image` is the one validation every array passes on its way in.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .errors import EngineError

Autocast = Callable[[], torch.autocast]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str) -> torch.device:
    """"auto" (CUDA, then Metal, then CPU) or an explicit device that must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA GPU is available to this PyTorch build")
    if name == "mps" and not _mps_available():
        raise EngineError("device 'mps' requested but Metal is not available")
    return torch.device(name)


def autocast_factory(device: torch.device, precision: str) -> Autocast:
    """A no-argument factory of the autocast context for "fp32", "fp16" or "bf16" on `device`."""
    if precision == "fp32":
        return lambda: torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        raise EngineError("fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return lambda: torch.autocast(device.type, dtype=dtype)


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
