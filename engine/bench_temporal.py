"""`neural-style bench-temporal`: flicker with and without temporal coherence.

Renders a tiny Cycles animation with known motion (neural_style_addon/motion.py,
run in a child process so this process never imports bpy), stylizes it
frame by frame independently and with temporal coherence at the same style
options, and measures, over the pixels Blender's own motion vectors trust:
flicker (mean |frame - warped previous frame|) and style distance (the style
loss of each result against the style, evaluated the same way for every mode),
so a flicker reduction bought by weakening the style would show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import losses
from .errors import EngineError
from .images import read_image
from .optimize import layer_plan, pick_device, style_grams, to_tensor
from .options import StyleOptions
from .temporal import TemporalOptions, blend_previous, flicker, frame_motion, list_frames, read_frame, stylize_sequence
from .weights import load_network

MOTION_SCRIPT = Path(__file__).resolve().parent.parent / "neural_style_addon" / "motion.py"
# Fast mode has no optimisation; its temporal coherence is `blend_previous` with this amount.
FAST_BLEND = 0.5


def render_demo(out_dir: Path, size: int, frames: int, step: int) -> list[Path]:
    """Render the demo animation to multilayer EXRs with Blender as a module, in a child process."""
    if not MOTION_SCRIPT.is_file():
        raise EngineError("rendering the demo needs the repository checkout (neural_style_addon/motion.py); pass --frames")
    with tempfile.TemporaryDirectory(prefix="neural-style-blender-") as resources:
        env = {**os.environ, "BLENDER_USER_RESOURCES": resources}
        command = [sys.executable, str(MOTION_SCRIPT), str(out_dir),
                   "--size", str(size), "--frames", str(frames), "--step", str(step)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"rendering the demo animation with bpy failed ({tail}); install bpy or pass --frames")
    return list_frames(out_dir)


def style_distance(images: list[np.ndarray], style: np.ndarray, options: StyleOptions) -> float:
    """Mean weighted style loss of `images` against `style` (lower = more of the style)."""
    device = pick_device(options.device)
    net = load_network(options.model, options.weights, options.pooling, options.cache_dir, options.seed or 0)
    _, layers, layer_weights = layer_plan(net, options)
    net = net.truncated(layers).to(device)
    grams = style_grams(net, [to_tensor(style, device)], [1.0], layers, contextlib.nullcontext)
    with torch.no_grad():
        values = [float(losses.style_loss(net(to_tensor(image, device), layers), grams, layer_weights)) for image in images]
    return options.style_weight * float(np.mean(values))


def run_benchmark(frames: list[Path], style: np.ndarray, options: StyleOptions, temporal: TemporalOptions,
                  work_dir: Path, progress=None) -> dict:
    """Stylize `frames` (multilayer EXRs with vectors) each way; returns the measurements per mode."""
    truth = [read_frame(path) for path in frames]
    if any(frame.to_prev is None for frame in truth):
        raise EngineError("the benchmark frames need Blender's Vector pass (multilayer EXR)")
    motions = [None] + [frame_motion(truth[i - 1], truth[i], "vectors") for i in range(1, len(truth))]
    results = {}
    outputs = {}
    for name, mode in (("independent", TemporalOptions(enabled=False)), ("temporal", temporal)):
        start = time.perf_counter()
        written = stylize_sequence(frames, [style], options, mode, work_dir / name, progress=progress)
        outputs[name] = [read_image(path)[..., :3] for path in written]
        results[name] = {"seconds": round(time.perf_counter() - start, 2)}
    blended = [outputs["independent"][0]]
    for output, motion in zip(outputs["independent"][1:], motions[1:]):
        blended.append(blend_previous(output, blended[-1], motion, FAST_BLEND))
    outputs[f"independent + blend {FAST_BLEND}"] = blended
    results[f"independent + blend {FAST_BLEND}"] = {"seconds": 0.0}
    for name, images in outputs.items():
        results[name]["flicker"] = round(flicker(images, motions), 5)
        results[name]["style_distance"] = round(style_distance(images, style, options), 4)
        results[name]["trusted_pixels"] = round(float(np.mean([m.mask.mean() for m in motions[1:]])), 3)
    base = results["independent"]["flicker"]
    for entry in results.values():
        entry["flicker_reduction"] = round(1 - entry["flicker"] / base, 3) if base > 0 else 0.0
    return results


def _cmd_bench_temporal(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli import SAMPLES, options_from_args

    options = options_from_args(args)
    temporal = TemporalOptions(weight=args.temporal_weight, blend=args.blend)
    style = read_image(args.style or SAMPLES / "style.png")
    with tempfile.TemporaryDirectory(prefix="neural-style-bench-") as tmp:
        work = Path(tmp)
        frames = list_frames(args.frames) if args.frames else render_demo(work / "frames", args.size, args.count, args.step)
        bar = tqdm(total=None, unit="it", dynamic_ncols=True)

        def progress(p) -> None:
            if p.iteration < bar.n:  # the next mode starts over
                bar.reset()
            bar.total = p.total
            bar.set_description(p.stage)
            bar.update(p.iteration - bar.n)

        try:
            results = run_benchmark(frames, style, options, temporal, work, progress)
        finally:
            bar.close()
    report = {"frames": len(frames), "size": args.size, "options": options.to_dict(),
              "temporal": temporal.to_dict(), "results": results}
    print(f"{'mode':<26}{'flicker':>10}{'reduction':>11}{'style dist.':>13}{'seconds':>9}")
    for name, entry in results.items():
        print(f"{name:<26}{entry['flicker']:>10.4f}{entry['flicker_reduction']:>10.0%}"
              f"{entry['style_distance']:>13.3f}{entry['seconds']:>9.1f}")
    Path(args.json_out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json_out}")
    return 0


def register(subparsers) -> None:
    from .cli import add_style_arguments

    p = subparsers.add_parser("bench-temporal", help="measure flicker with and without temporal coherence",
                              description="Renders a tiny Cycles animation (needs bpy) unless --frames is given.")
    p.add_argument("--frames", help="folder of multilayer EXRs with a Vector pass instead of the rendered demo")
    p.add_argument("--style", help="style image (default: bundled sample)")
    p.add_argument("--count", type=int, default=4, help="frames to render")
    p.add_argument("--step", type=int, default=6, help="pixels the demo object moves per frame")
    p.add_argument("--temporal-weight", type=float, default=TemporalOptions().weight)
    p.add_argument("--blend", type=float, default=TemporalOptions().blend)
    p.add_argument("--json-out", default="bench-temporal.json")
    add_style_arguments(p)
    p.set_defaults(func=_cmd_bench_temporal, size=64, iterations=60, seed=0)
