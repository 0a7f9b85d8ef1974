"""Stable names for what a cached result depends on: image pixels, network weights, option sets.

Style Grams, exported feature networks and fast-mode models are cached on disk
and found again by these digests, so they must change exactly when the inputs
that shape the result change.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from .weights import DOWNLOADS, PACKAGED_SHA256, sha256_file


def array_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's RGB pixels (float32) and shape; alpha does not reach the network."""
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.float32)[..., :3])
    digest = hashlib.sha256(repr(rgb.shape).encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def data_digest(data) -> str:
    """SHA-256 of any JSON-serialisable value, independent of dict order."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def weights_key(model: str, weights: str, seed: int | None) -> str:
    """Which weights `load_network(model, weights, ..., seed=seed or 0)` loads, as a short string."""
    if weights == "packaged":
        return f"packaged-{PACKAGED_SHA256[:16]}"
    if weights == "download":
        return f"download-{DOWNLOADS[model].sha256[:16]}"
    if weights == "random":
        return f"random-seed{seed or 0}"
    path = Path(weights).expanduser().resolve()
    stat = path.stat()
    return f"file-{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)[:16]}"


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Hash a weights file once per process and version (they are hundreds of MB)."""
    return sha256_file(Path(path))
