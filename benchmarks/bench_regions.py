"""Spatial control on a rendered scene: a style per object, masks from Cryptomatte.

The demo scene (benchmarks/demo_scene.py: a cube on a textured ground, seen
from above) is rendered once with Cycles and its Cryptomatte Object pass; the
cube takes style A (brush strokes), the ground style B (a stained-glass
mosaic), both from benchmarks/speed_images.py (no test uses them).  The table
gives, for each region of the result, the style distance (relative guided-Gram
error over VGG-16's style layers, the loss's own measure) to style A and to
style B: each region must be much nearer its own style.  For seams and halos it
gives the gradient energy in a band along the cube's border over the energy
elsewhere, for the content, the result and the two one-style results (a seam
would raise the result's ratio above the one-style results', a halo would show
as a bright or dark ring).  Writes docs/bench/regions.json and docs/regions.png.

Run from the repository root: `python -m benchmarks.bench_regions [--width 288 --height 192 --iterations 150]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.cli.common import run_command
from engine.exr import cryptomatte, read_render
from engine.losses import guided_style_loss
from engine.model import prepare_network
from engine.options import StyleOptions
from engine.pipeline import stylize
from engine.regions import Guide, Region
from engine.targets import TargetSource
from engine.tensors import autocast_factory, to_tensor

from . import machine, write_json
from .speed_images import brush_strokes, mosaic

# Pixels on either side of a region border counted as "along the border".
BAND = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_regions", description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=288)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--weights", default="packaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default="docs/bench/regions.json")
    p.add_argument("--picture", default="docs/regions.png")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(report, build_parser().parse_args(argv), "bench_regions")


def render_scene(width: int, height: int, folder: str) -> str:
    """The demo scene's middle frame with the Cryptomatte Object pass, as a multilayer EXR."""
    import bpy

    from neural_style_addon.motion import save_motion_exr

    from .demo_scene import demo_scene

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    demo_scene(scene, width, height, frames=1, samples=16)
    scene.render.filter_size = 1.5  # Blender's default pixel filter: anti-aliased coverage
    layer = scene.view_layers[0]
    layer.use_pass_cryptomatte_object = True
    layer.pass_cryptomatte_depth = 6
    scene.frame_set(1)
    bpy.ops.render.render(scene=scene.name)
    return save_motion_exr(scene, str(Path(folder) / "scene.exr"))


def style_distances(result: np.ndarray, styles: list[np.ndarray], mask: np.ndarray, options: StyleOptions) -> list[float]:
    """Relative guided-Gram error of `result` inside `mask` to each style (at the result's scale)."""
    device = torch.device("cpu")
    net, plan, _ = prepare_network(options, device)
    fp32 = autocast_factory(device, "fp32")
    source = TargetSource(net, options, styles, [1.0] * len(styles), device, fp32)
    h, w = result.shape[:2]
    with torch.no_grad():
        feats = net(to_tensor(result[..., :3], device), plan.style)
        guide_mask = torch.from_numpy(mask)[None, None]
        out = []
        for index in range(len(styles)):
            mix = source.mix.__class__((index,), (1.0,), options.style_scale)
            guide = Guide(source.grams(h, w, mix), guide_mask, 1.0)
            area = float(guide_mask.mean())
            out.append(float(guided_style_loss(feats, [guide], plan.weights)) / area)
    return out


def border_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient energy within BAND px of the mask's border over the mean elsewhere."""
    rgb = image[..., :3].astype(np.float32)
    energy = np.zeros(rgb.shape[:2], np.float32)
    energy[:, 1:] += ((rgb[:, 1:] - rgb[:, :-1]) ** 2).sum(-1)
    energy[1:, :] += ((rgb[1:] - rgb[:-1]) ** 2).sum(-1)
    inside = (mask > 0.5).astype(np.uint8)
    kernel = np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8)
    band = cv2.dilate(inside, kernel).astype(bool) & ~cv2.erode(inside, kernel).astype(bool)
    return float(energy[band].mean() / energy[~band].mean())


def report(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        exr = render_scene(args.width, args.height, folder)
        content = read_render(exr).image[..., :3]
        cube = cryptomatte(exr, "object", ["cube"])
        ground = cryptomatte(exr, "object", ["ground"])
    side = max(args.width, args.height)
    styles = [brush_strokes(side), mosaic(side)]
    options = StyleOptions(weights=args.weights, iterations=args.iterations, seed=args.seed, device="cpu",
                           min_scale_size=side)
    regions = [Region(cube, (0,)), Region(ground, (1,))]
    runs = {}
    for name, run_styles, run_regions in (("regions", styles, regions), ("A everywhere", styles[:1], None),
                                          ("B everywhere", styles[1:], None)):
        start = time.perf_counter()
        runs[name] = (stylize(content, run_styles, options, regions=run_regions), time.perf_counter() - start)
    result = runs["regions"][0]
    rows = []
    for region, mask in (("cube (A)", cube), ("ground (B)", ground)):
        to_a, to_b = style_distances(result, styles, mask, options)
        rows.append({"region": region, "pixels": float(mask.sum()), "distance_to_A": to_a, "distance_to_B": to_b})
    borders = {"content": border_ratio(content, cube)}
    borders.update({name: border_ratio(image, cube) for name, (image, _) in runs.items()})
    print(f"{'region':<12}{'pixels':>8}{'to style A':>12}{'to style B':>12}")
    for r in rows:
        print(f"{r['region']:<12}{r['pixels']:>8.0f}{r['distance_to_A']:>12.3f}{r['distance_to_B']:>12.3f}")
    print(f"\nborder / elsewhere gradient energy (band {BAND} px along the cube's outline):")
    for name, ratio in borders.items():
        print(f"  {name:<14}{ratio:.2f}")
    print("seconds: " + ", ".join(f"{name} {seconds:.0f}" for name, (_, seconds) in runs.items()))
    write_json({"machine": machine(), "options": options.to_dict(), "width": args.width, "height": args.height,
                "rows": rows, "border_ratio": borders, "band_px": BAND,
                "seconds": {name: seconds for name, (_, seconds) in runs.items()},
                "command": "python -m benchmarks.bench_regions " + " ".join(sys.argv[1:])}, Path(args.json_out))
    if args.picture:
        save_picture(content, cube, runs, styles, Path(args.picture))
    return 0


def save_picture(content, mask, runs, styles, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [("content (Cycles render)", content), ("cube mask (Cryptomatte)", np.repeat(mask[..., None], 3, 2)),
              ("style A", styles[0]), ("style B", styles[1]), ("cube A, ground B", runs["regions"][0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.6), dpi=100)
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(np.clip(image[..., :3], 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
