"""How far a square window of the style is from the whole style, in the style loss: the floor fast-mode training meets.

Fast-mode training compares the Grams of small crops with the Grams of the whole style
(engine/fast/training.py).  This measures what that comparison gives for windows of the
style itself, which a perfect network would reproduce: for each window side, the mean
relative Gram error (`engine.losses.relative_mse`, the training's measure) of `--windows`
random windows against the whole style, per style layer; the error of the windows' mean
Gram (the bias: what more windows would not remove); and the windows' spread around that
mean (the noise).  The style is the fast-mode benchmark's (benchmarks/speed_images.py
`brush_strokes`), the network the default loss network (packaged VGG-16), in fp32.
Writes docs/bench/crop_floor.json (docs/onnx-and-fast-mode.md, "A floor under 128 px crops").

Run from the repository root: `python -m benchmarks.crop_floor [--size 256] [--sides 96,128,192] [--windows 32]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import machine, write_json

DEFAULT_JSON = Path("docs/bench/crop_floor.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crop_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="side of the square style in pixels")
    p.add_argument("--sides", default="96,128,192", help="window sides, comma-separated, each below --size")
    p.add_argument("--windows", type=int, default=32, help="random windows per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return p


def floor(style: np.ndarray, sides: list[int], windows: int, seed: int) -> list[dict]:
    """Per window side: mean window error, bias and spread per style layer, and their means over layers."""
    import torch

    from engine import losses
    from engine.model import prepare_network
    from engine.options import StyleOptions
    from engine.tensors import to_tensor

    net, plan, device = prepare_network(StyleOptions(weights="packaged", precision="fp32"))
    rng = np.random.default_rng(seed)

    def grams(image: np.ndarray) -> dict[str, torch.Tensor]:
        features = net(to_tensor(np.ascontiguousarray(image), device), plan.style)
        return {name: losses.gram(features[name])[0] for name in plan.style}

    rows = []
    with torch.no_grad():
        whole = grams(style)
        for side in sides:
            h, w = style.shape[:2]
            tops, lefts = rng.integers(0, h - side + 1, windows), rng.integers(0, w - side + 1, windows)
            seen = [grams(style[t : t + side, left : left + side]) for t, left in zip(tops, lefts)]
            row = {"side": side, "windows": windows, "layers": {}}
            for name in plan.style:
                mean = torch.stack([g[name] for g in seen]).mean(0)
                row["layers"][name] = {
                    "window": float(np.mean([float(losses.relative_mse(g[name], whole[name])) for g in seen])),
                    "bias": float(losses.relative_mse(mean, whole[name])),
                    "spread": float(np.mean([float(losses.relative_mse(g[name], mean)) for g in seen])),
                }
            for measure in ("window", "bias", "spread"):
                row[measure] = float(np.mean([layer[measure] for layer in row["layers"].values()]))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sides = [int(s) for s in args.sides.split(",")]
    if any(not 16 <= s < args.size for s in sides):
        print(f"error: every window side must be between 16 and --size ({args.size}) exclusive", file=sys.stderr)
        return 2
    from .speed_images import brush_strokes

    info = machine()
    rows = floor(brush_strokes(args.size)[..., :3], sides, args.windows, args.seed)
    layers = list(rows[0]["layers"])
    print(f"relative Gram error of {args.windows} windows of the {args.size} px style against the whole style")
    print("| side | measure | " + " | ".join(layers) + " | mean |")
    print("| ---: | --- | " + " | ".join("---:" for _ in layers) + " | ---: |")
    for row in rows:
        for measure in ("window", "bias", "spread"):
            cells = " | ".join(f"{row['layers'][name][measure]:.3f}" for name in layers)
            print(f"| {row['side']} | {measure} | {cells} | {row[measure]:.3f} |")
    path = write_json({"machine": info, "settings": vars(args) | {"json": str(args.json)}, "sides": rows}, args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
