"""Applying a trained fast-mode model under onnxruntime: one image, or image files in order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .. import onnx_export
from ..errors import Cancelled, EngineError
from ..images import read_image, resize, write_image
from ..options import StyleOptions
from ..pipeline import output_shape
from ..progress import CancelFn, Progress, ProgressFn
from ..tensors import check_image


def apply(model: str | os.PathLike, image: np.ndarray, device: str = "auto", size: int | None = None) -> np.ndarray:
    """Stylize one HxWx3/4 sRGB array with a trained model; alpha passes through unchanged."""
    image = check_image("image", image)
    session = onnx_export.session(_onnx_file(model), device, arena=True)  # frames share one size
    height, width = output_shape(image, StyleOptions(size=size))
    rgb = resize(image[..., :3], height, width)
    # The network halves the size twice, so pad to multiples of 4 and crop afterwards.
    pad_h, pad_w = -height % 4, -width % 4
    padded = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(height, width) > 4 else "edge")
    out = onnx_export.run(session, padded.transpose(2, 0, 1)[None])[0][0].transpose(1, 2, 0)[:height, :width]
    out = np.clip(out, 0, 1).astype(np.float32)
    if image.shape[2] == 4:
        out = np.concatenate([out, resize(image[..., 3:], height, width)], axis=2)
    return out


def apply_sequence(
    model: str | os.PathLike,
    inputs: list[str | os.PathLike],
    output_dir: str | os.PathLike,
    device: str = "auto",
    size: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[Path]:
    """Stylize image files into `output_dir` under their own names; one progress report (kind "frame") per frame."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise EngineError(f"output folder does not exist: {output_dir}")
    started = time.perf_counter()
    written = []
    for index, path in enumerate(inputs, start=1):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        result = apply(model, read_image(path), device, size)
        written.append(write_image(output_dir / Path(path).name, result, protect=tuple(inputs)))
        if progress is not None:
            progress(Progress(
                index, len(inputs), {}, time.perf_counter() - started, kind="frame", frame=index,
                frames=len(inputs), height=result.shape[0], width=result.shape[1], image=lambda r=result: r,
            ))
    return written


def _onnx_file(model: str | os.PathLike) -> Path:
    """A model given by any of its three files."""
    path = Path(model)
    if path.suffix in (".json", ".pt"):
        path = path.with_suffix(".onnx")
    if not path.is_file():
        raise EngineError(f"fast-mode model not found: {path} (train one with `neural-style train-fast`)")
    return path
