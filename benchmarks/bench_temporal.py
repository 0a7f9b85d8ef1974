"""Temporal coherence measured: does it keep still things still and still follow what changes?

Renders a tiny Cycles animation (benchmarks/demo_scene.py: a cube moving over
sunlit ground, uncovering ground behind it and dragging its shadow over ground
that does not move; run in a child process so this process never imports
bpy), stylizes it frame by frame independently and with temporal coherence at
the same style options, applies fast mode's blend to the independent frames,
and measures each against the render's own passes:

- static flicker: the mean absolute RGB change of the output from frame to
  frame, over pixels whose content did not change (CIELAB Delta E < 1);
- follow: over pixels whose content changed between the first and the last
  frame (Delta E > 10), the mean change of the output along the direction the
  content's colour changed; the follow ratio is a mode's follow over the
  independent frames' (1 = follows as much as stylizing each frame anew);
- warping error (Lai et al. 2018): the mean squared RGB difference between each
  output and the previous output warped along the motion vectors, over pixels
  the geometry (vectors and depth) says are visible in both frames;
- style distance: the style loss of the results, so a calmer result bought by
  weakening the style would show;
- seconds per frame.

Run from the repository root: `python -m benchmarks.bench_temporal [--count 4] ...`;
it writes docs/bench-temporal.json and the picture docs/temporal-strip.png
(rows: content, independent, temporal; one column per frame).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from engine import losses
from engine.cli.common import SAMPLES, add_style_arguments, options_from_args, progress_bar, run_command
from engine.cli.stylize_sequence import add_temporal_arguments
from engine.errors import EngineError
from engine.files import list_frames
from engine.flow import warp
from engine.images import read_image
from engine.model import prepare_network
from engine.options import StyleOptions
from engine.targets import style_grams
from engine.temporal import Frame, TemporalOptions, blend_previous, frame_motion, read_frame, stylize_sequence
from engine.tensors import to_tensor
from engine.trust import colour_difference, trust_mask

from . import write_json

ROOT = Path(__file__).resolve().parent.parent
# Fast mode has no optimisation; its temporal coherence is `blend_previous` with this amount.
FAST_BLEND = 0.5
# Content counts as unchanged below this CIELAB Delta E, and as changed above the other.
STILL, CHANGED = 1.0, 10.0


def render_demo(out_dir: Path, width: int, height: int, frames: int, step: int) -> list[Path]:
    """Render the demo animation to multilayer EXRs with Blender as a module, in a child process."""
    with tempfile.TemporaryDirectory(prefix="neural-style-blender-") as resources:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "BLENDER_USER_RESOURCES": resources, "PYTHONPATH": path}
        command = [sys.executable, "-m", "benchmarks.demo_scene", str(out_dir), "--width", str(width),
                   "--height", str(height), "--frames", str(frames), "--step", str(step)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"rendering the demo animation with bpy failed ({tail}); install bpy or pass --frames")
    return list_frames(out_dir)


def static_flicker(outputs: list[np.ndarray], contents: list[np.ndarray]) -> float:
    """Mean |output_t - output_t-1| (RGB, 0-1) over the pixels whose content did not change."""
    changes = []
    for i in range(1, len(outputs)):
        still = colour_difference(contents[i], contents[i - 1]) < STILL
        change = np.abs(outputs[i][..., :3] - outputs[i - 1][..., :3])
        changes.append(float(change[still].mean()) if still.any() else 0.0)
    return float(np.mean(changes))


def follow(outputs: list[np.ndarray], contents: list[np.ndarray]) -> float:
    """The output's mean change, first to last frame, along the content's colour change where that is large."""
    changed = colour_difference(contents[-1], contents[0]) > CHANGED
    if not changed.any():
        raise EngineError("the content does not change between the first and last frame; nothing to follow")
    content_change = contents[-1][..., :3] - contents[0][..., :3]
    direction = content_change / np.maximum(np.linalg.norm(content_change, axis=2, keepdims=True), 1e-6)
    output_change = outputs[-1][..., :3] - outputs[0][..., :3]
    return float((output_change * direction).sum(axis=2)[changed].mean())


def warping_error(outputs: list[np.ndarray], frames: list[Frame]) -> float:
    """Lai et al. 2018: mean squared RGB difference to the warped previous output, over geometrically visible pixels."""
    errors = []
    for i in range(1, len(outputs)):
        now, before = frames[i], frames[i - 1]
        visible = trust_mask(now.to_prev, before.to_next, depth=now.depth, previous_depth=before.depth,
                             feather=0) > 0.5
        warped = warp(outputs[i - 1][..., :3], now.to_prev)
        errors.append(float(((outputs[i][..., :3] - warped) ** 2).sum(axis=2)[visible].mean()))
    return float(np.mean(errors))


def style_distances(runs: dict[str, list[np.ndarray]], style: np.ndarray, options: StyleOptions) -> dict[str, float]:
    """Mean weighted style loss of each run's images against `style` (lower = more of the style)."""
    net, plan, device = prepare_network(options)
    grams = style_grams(net, [to_tensor(style, device)], [1.0], plan.style, contextlib.nullcontext)
    distances = {}
    with torch.no_grad():
        for name, images in runs.items():
            values = [float(losses.style_loss(net(to_tensor(image, device), plan.style), grams, plan.weights))
                      for image in images]
            distances[name] = options.style_weight * float(np.mean(values))
    return distances


class Measured(NamedTuple):
    results: dict[str, dict[str, float]]  # mode -> measurement -> value
    images: dict[str, list[np.ndarray]]  # "content" and each mode -> its frames (for `save_strip`)


def run_benchmark(frames: list[Path], style: np.ndarray, options: StyleOptions, temporal: TemporalOptions,
                  work_dir: Path, progress=None) -> Measured:
    """Stylize `frames` (multilayer EXRs with vectors) each way; the measurements per mode and the images."""
    truth = [read_frame(path) for path in frames]
    if any(frame.to_prev is None for frame in truth):
        raise EngineError("the benchmark frames need Blender's Vector pass (multilayer EXR)")
    contents = [frame.content[..., :3] for frame in truth]
    results, outputs = {}, {"content": contents}
    for name, mode in (("independent", TemporalOptions(enabled=False)), ("temporal", temporal)):
        start = time.perf_counter()
        written = stylize_sequence(frames, [style], options, mode, work_dir / name, progress=progress)
        outputs[name] = [read_image(path)[..., :3] for path in written]
        results[name] = {"seconds_per_frame": round((time.perf_counter() - start) / len(frames), 2)}
    fast = f"independent + blend {FAST_BLEND}"
    start = time.perf_counter()
    blended = [outputs["independent"][0]]
    for i in range(1, len(truth)):
        motion = frame_motion(truth[i - 1], truth[i], temporal)
        blended.append(blend_previous(outputs["independent"][i], blended[-1], motion, FAST_BLEND))
    outputs[fast] = blended
    results[fast] = {"seconds_per_frame": round((time.perf_counter() - start) / len(frames), 3)}
    distances = style_distances({name: outputs[name] for name in results}, style, options)
    base_flicker = static_flicker(outputs["independent"], contents)
    base_follow = follow(outputs["independent"], contents)
    for name in results:
        images = outputs[name]
        entry = results[name]
        entry["static_flicker"] = round(static_flicker(images, contents), 5)
        entry["static_flicker_ratio"] = round(entry["static_flicker"] / base_flicker, 3) if base_flicker else 0.0
        entry["follow"] = round(follow(images, contents), 5)
        entry["follow_ratio"] = round(entry["follow"] / base_follow, 3) if base_follow else 0.0
        entry["warping_error"] = round(warping_error(images, truth), 6)
        entry["style_distance"] = round(distances[name], 4)
    return Measured(results, outputs)


def save_strip(images: dict[str, list[np.ndarray]], path: str | Path, rows=("content", "independent", "temporal"),
               zoom: int = 2) -> Path:
    """A picture: one row per mode in `rows`, one column per frame, labelled, enlarged `zoom` times."""
    from PIL import Image, ImageDraw

    from engine.files import atomic_write

    tiles = [np.concatenate([np.clip(image[..., :3], 0, 1) for image in images[row]], axis=1) for row in rows]
    grid = (np.concatenate(tiles, axis=0) * 255).round().astype(np.uint8)
    picture = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.Resampling.NEAREST)
    label = 90
    canvas = Image.new("RGB", (picture.width + label, picture.height), "white")
    canvas.paste(picture, (label, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = picture.height // len(rows)
    for index, row in enumerate(rows):
        draw.text((6, index * row_height + row_height // 2 - 6), row, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_temporal", description=__doc__.split("\n\n")[0],
                                epilog="Renders a tiny Cycles animation (needs bpy) unless --frames is given.")
    p.add_argument("--frames", help="folder of multilayer EXRs with Vector (and Depth) passes instead of the demo")
    p.add_argument("--style", help="style image (default: bundled sample)")
    p.add_argument("--count", type=int, default=4, help="frames to render")
    p.add_argument("--width", type=int, default=96, help="width of the rendered demo")
    p.add_argument("--height", type=int, default=64, help="height of the rendered demo")
    p.add_argument("--step", type=int, default=6, help="pixels the demo cube moves right per frame (half as many up)")
    add_temporal_arguments(p)
    p.add_argument("--json-out", default=str(ROOT / "docs" / "bench-temporal.json"))
    p.add_argument("--strip", default=str(ROOT / "docs" / "temporal-strip.png"), help="picture of the frames")
    add_style_arguments(p.add_argument_group("style options"))
    p.set_defaults(iterations=30, seed=0)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(report, build_parser().parse_args(argv), "bench_temporal")


def report(args: argparse.Namespace) -> int:
    """Render (or read) the frames, measure each mode, print the table, write the JSON and the strip."""
    options = options_from_args(args)
    temporal = TemporalOptions(weight=args.temporal_weight, blend=args.blend, tolerance=args.tolerance,
                               feather=args.feather)
    style = read_image(args.style or SAMPLES / "style.png")
    with tempfile.TemporaryDirectory(prefix="neural-style-bench-") as tmp:
        work = Path(tmp)
        frames = (list_frames(args.frames) if args.frames
                  else render_demo(work / "frames", args.width, args.height, args.count, args.step))
        with progress_bar(quiet=False) as progress:  # starts over for each mode
            results, images = run_benchmark(frames, style, options, temporal, work, progress)
    height, width = images["content"][0].shape[:2]
    summary = {"frames": len(frames), "width": width, "height": height, "options": options.to_dict(),
               "temporal": temporal.to_dict(), "results": results}
    print(f"{'mode':<26}{'static flicker':>15}{'ratio':>7}{'follow':>8}{'ratio':>7}{'warp err.':>10}"
          f"{'style dist.':>12}{'s/frame':>9}")
    for name, e in results.items():
        print(f"{name:<26}{e['static_flicker']:>15.4f}{e['static_flicker_ratio']:>7.2f}{e['follow']:>8.3f}"
              f"{e['follow_ratio']:>7.2f}{e['warping_error']:>10.5f}{e['style_distance']:>12.3f}"
              f"{e['seconds_per_frame']:>9.2f}")
    print(f"wrote {write_json(summary, args.json_out)} and {save_strip(images, args.strip)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
