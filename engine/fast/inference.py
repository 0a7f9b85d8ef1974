"""Applying a trained fast-mode model under onnxruntime: one image, or image files in order.

A sequence can be tied together like the optimisation path's (engine/temporal.py): each result is mixed with
the previous result warped along the motion (Blender's Vector pass in multilayer EXRs, else optical flow) where
the trust mask says the picture did not change, `TemporalOptions.blend` of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .. import onnx_export
from ..errors import Cancelled, EngineError
from ..images import check_output_folder, resize, write_image
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
    temporal=None,
    suffix: str | None = None,
) -> list[Path]:
    """Stylize image files into `output_dir` (created when missing) under their own names (`suffix` replaces
    their extension); one progress report (kind "frame") per frame.

    `temporal` (an `engine.temporal.TemporalOptions`, enabled with a `blend` above 0) ties each frame to the
    previous result: frames that are Blender multilayer EXRs bring their motion vectors, other frames get
    optical flow.  Each frame is written as soon as it is done, so a cancelled run keeps what it finished.
    """
    output_dir = check_output_folder(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    linked = temporal is not None and temporal.enabled and temporal.blend > 0
    if linked:
        from ..temporal import blend_previous, frame_motion, read_frame
    else:
        from ..images import read_image
    started = time.perf_counter()
    written: list[Path] = []
    before = None  # (frame, result) of the previous frame when linked
    for index, path in enumerate(inputs, start=1):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        frame = read_frame(path) if linked else None
        result = apply(model, frame.content if linked else read_image(path), device, size)
        if before is not None:
            result = blend_previous(result, before[1], frame_motion(before[0], frame, temporal), temporal.blend)
        if linked:
            before = (frame, result)
        name = Path(path).name if suffix is None else Path(path).stem + suffix
        written.append(write_image(output_dir / name, result, protect=tuple(inputs)))
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
