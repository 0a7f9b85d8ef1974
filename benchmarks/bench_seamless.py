"""Seam error of stylized tiling textures, with and without `--seamless`.

A tileable texture (stones: Voronoi cells on a torus) is stylized twice with
the same options, seamless off and on.  For each picture the table gives the
seam ratio (engine.seamless.seam_ratio: mean |difference| across the wrap edge
over the mean |difference| between neighbouring columns/rows inside) and, for
context, the same statistic at interior lines (the picture rolled by whole
network strides, so the line sits where the wrap edge would), whose spread
shows how much the ratio varies by chance.  Writes docs/bench/seamless.json and
a picture of each texture repeated 3x3 (docs/material-textures-3x3.png).

Run from the repository root: `python -m benchmarks.bench_seamless [--size 192] [--iterations 60]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from engine.cli.common import SAMPLES, run_command
from engine.images import read_image, resize
from engine.options import StyleOptions
from engine.pipeline import stylize
from engine.seamless import seam_ratio

from . import machine, write_json

STRIDE = 16  # VGG's stride at relu5_1: rolls by multiples of it are symmetries of a seamless run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_seamless", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=192, help="texture side in pixels (a multiple of 16)")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--style-weight", type=float, default=100.0)
    p.add_argument("--weights", default="packaged")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default="docs/bench/seamless.json")
    p.add_argument("--picture", default="docs/material-textures-3x3.png")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(report, build_parser().parse_args(argv), "bench_seamless")


def stones(size: int, cells: int = 14, seed: int = 0) -> np.ndarray:
    """A tileable stone texture: Voronoi cells on a torus, each its own colour, with dark mortar."""
    rng = np.random.default_rng(seed)
    points = rng.random((cells, 2)) * size
    colours = 0.35 + 0.5 * rng.random((cells, 3)) * np.array([1.0, 0.8, 0.6])
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    d = []
    for py, px in points:
        dy = np.abs(y - py)
        dx = np.abs(x - px)
        d.append(np.hypot(np.minimum(dy, size - dy), np.minimum(dx, size - dx)))  # distance on the torus
    d = np.stack(d)
    order = np.sort(d, axis=0)
    mortar = np.clip((order[1] - order[0]) / (0.04 * size), 0, 1)[..., None]
    image = colours[np.argmin(d, axis=0)] * (0.25 + 0.75 * mortar)
    grain = rng.standard_normal((size, size, 1)) * 0.03  # iid noise is periodic in distribution
    return np.clip(image + grain, 0, 1).astype(np.float32)


def interior_ratios(image: np.ndarray) -> list[float]:
    """seam_ratio with the line moved inside the picture, at every multiple of STRIDE."""
    h, w = image.shape[:2]
    return [seam_ratio(np.roll(image, (k * STRIDE, k * STRIDE), axis=(0, 1)))
            for k in range(1, min(h, w) // STRIDE)]


def row(name: str, image: np.ndarray, seconds: float | None = None) -> dict:
    inside = interior_ratios(image)
    return {"picture": name, "seam_ratio": round(seam_ratio(image), 3),
            "interior_median": round(statistics.median(inside), 3),
            "interior_min": round(min(inside), 3), "interior_max": round(max(inside), 3),
            "seconds": None if seconds is None else round(seconds, 1)}


def report(args: argparse.Namespace) -> int:
    texture = stones(args.size, seed=args.seed)
    style = resize(read_image(SAMPLES / "style.png"), args.size, args.size)
    base = StyleOptions(weights=args.weights, iterations=args.iterations, style_weight=args.style_weight,
                        seed=args.seed, device=args.device, tile_size=-1)
    rows, pictures = [row("texture", texture)], {"texture": texture}
    for seamless in (False, True):
        name = "seamless on" if seamless else "seamless off"
        start = time.perf_counter()
        pictures[name] = stylize(texture, [style], base.replace(seamless=seamless))
        rows.append(row(name, pictures[name], time.perf_counter() - start))
    print(f"{'picture':<14}{'seam ratio':>12}{'interior median':>17}{'interior range':>18}{'seconds':>9}")
    for r in rows:
        span = f"{r['interior_min']:.2f}-{r['interior_max']:.2f}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        print(f"{r['picture']:<14}{r['seam_ratio']:>12.3f}{r['interior_median']:>17.3f}{span:>18}{secs:>9}")
    write_json({"machine": machine(), "options": base.to_dict(), "size": args.size, "rows": rows,
                "command": "python -m benchmarks.bench_seamless " + " ".join(sys.argv[1:])}, Path(args.json_out))
    if args.picture:
        save_picture(pictures, rows, Path(args.picture))
    return 0


def save_picture(pictures: dict[str, np.ndarray], rows: list[dict], path: Path) -> None:
    """Each picture repeated 3x3, as a plane with a Repeat texture at UV scale 3 shows it, with its seam ratio."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    side = 3 * next(iter(pictures.values())).shape[0] / 100  # inches at 100 dpi: one screen pixel per texel
    fig, axes = plt.subplots(1, len(pictures), figsize=(side * len(pictures), side + 0.6), dpi=100)
    for ax, (name, image), r in zip(axes, pictures.items(), rows):
        ax.imshow(np.tile(np.clip(image[..., :3], 0, 1), (3, 3, 1)), interpolation="nearest")
        ax.set_title(f"{name}\nseam ratio {r['seam_ratio']:.2f} (inside: median {r['interior_median']:.2f})",
                     fontsize=10)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
