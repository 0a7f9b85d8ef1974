"""Issue 24: what the convergence stop watches, and where each threshold would end a run (calibration).

    python -m benchmarks.stop_rule [--pairs landscape-strokes,stilllife-mosaic,samples] [--size 256]
                                   [--iterations 300] [--snapshots DIR] [--json docs/bench/stop_rule.json]

Each pair runs `engine.stylize` with the stop off (`stop_change` 0) for `--iterations`
iterations, seed 0, keeping the picture every `STOP_EVERY` iterations and the
objective (content + style terms) after each.  For every kept picture it then
records what a stop rule could watch: the change of the picture's style statistics
since the previous look (`engine.optimize.StopRule`'s measure, in percent: the
packaged VGG-16's Gram matrices of the style layers), the mean absolute pixel change
in 8-bit levels, and how far the picture still is from the last one.  For each
threshold it prints after how many iterations the rule would end the run and what
the objective is there, against the objective after 200 (the default `-n`) and
after all iterations.  The pairs are the calibration set: the procedural pairs of
benchmarks/speed_images.py and the bundled samples; the held-out pairs of
benchmarks/held_out.py are kept for benchmarks/time_to_quality.py.
`--snapshots DIR` keeps (and reuses) each run's pictures as DIR/NAME-SIZE.npz.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import machine, write_json

DEFAULT_JSON = Path("docs/bench/stop_rule.json")
THRESHOLDS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def pair(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    from engine.cli.common import SAMPLES
    from engine.images import read_image, resize

    if name == "samples":
        content = read_image(SAMPLES / "content.png")[..., :3]
        h, w = content.shape[:2]
        factor = size / max(h, w)
        return resize(content, round(h * factor), round(w * factor)), read_image(SAMPLES / "style.png")[..., :3]
    from benchmarks.speed_images import pair as procedural

    return procedural(name, round(size * 2 / 3), size)


def record(name: str, size: int, iterations: int) -> dict[str, np.ndarray]:
    """The pictures every STOP_EVERY iterations (key "s<iteration>", "s0" the content) and "objective" rows
    (iteration, seconds, content + style) of a no-stop run."""
    from engine.optimize import STOP_EVERY
    from engine.options import StyleOptions
    from engine.pipeline import stylize

    content, style = pair(name, size)
    pictures, rows = {"s0": content.astype(np.float32)}, []
    start = time.perf_counter()

    def report(p) -> None:
        rows.append((p.ran, time.perf_counter() - start, p.losses["content"] + p.losses["style"]))
        if p.ran % STOP_EVERY == 0:
            pictures[f"s{p.ran}"] = p.image().astype(np.float32)

    stylize(content, [style], StyleOptions(iterations=iterations, stop_change=0.0, seed=0), progress=report)
    return {**pictures, "objective": np.array(rows)}


def analyse(name: str, data: dict[str, np.ndarray]) -> dict:
    """Per look: the StopRule change, the pixel change, the distance to the last picture; per threshold: where
    the rule ends the run."""
    import torch

    from engine.networks import SPECS
    from engine.optimize import StopRule
    from engine.tensors import to_tensor
    from engine.weights import load_network

    layers = tuple(SPECS["vgg16"].style_layers)
    net = load_network("vgg16", "packaged", "max").truncated(layers)
    objective = {int(k): float(v) for k, _, v in data["objective"]}
    looks = sorted(int(k[1:]) for k in data if k.startswith("s"))
    last = looks[-1]
    rule = StopRule(float("inf"))
    for t in looks:
        with torch.no_grad():
            rule.look(net(to_tensor(data[f"s{t}"], torch.device("cpu")), layers))
    rows = []
    for t, change in zip(looks[1:], rule.changes):
        picture, before = data[f"s{t}"], data[f"s{t - looks[1]}"]
        rows.append({"iteration": t, "style_change_percent": round(change, 3),
                     "pixel_change_levels": round(float(np.abs(picture - before).mean() * 255), 2),
                     "levels_from_last": round(float(np.abs(data[f"s{last}"] - picture).mean() * 255), 2),
                     "objective": round(objective[t], 4)})
    stops = {}
    for threshold in THRESHOLDS:
        # StopRule ends after the step whose evaluation was the second settled look in a row (picture t, step t+1)
        end = next((b["iteration"] for a, b in zip(rows, rows[1:])
                    if a["style_change_percent"] < threshold and b["style_change_percent"] < threshold), None)
        if end is None:
            stops[str(threshold)] = None
            continue
        value = objective[end]
        stops[str(threshold)] = {"iterations": end + 1, "objective": round(value, 4),
                                 "vs_200": round(value / objective[200] - 1, 4) if 200 in objective else None,
                                 f"vs_{last}": round(value / objective[last] - 1, 4),
                                 "levels_from_last": next(r["levels_from_last"] for r in rows if r["iteration"] == end)}
    return {"pair": name, "looks": rows, "stops": stops, "last": last}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="landscape-strokes,stilllife-mosaic,samples")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--snapshots", type=Path, help="keep (and reuse) each run's pictures here")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    report = {"machine": machine(), "settings": {"size": args.size, "iterations": args.iterations},
              "thresholds_percent": THRESHOLDS, "pairs": []}
    for name in [n for n in args.pairs.split(",") if n]:
        path = args.snapshots / f"{name}-{args.size}.npz" if args.snapshots else None
        if path is not None and path.is_file():
            data = dict(np.load(path))
        else:
            print(f"{name} at {args.size} px, {args.iterations} iterations, stop off ...", flush=True)
            data = record(name, args.size, args.iterations)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, **data)
        result = analyse(name, data)
        report["pairs"].append(result)
        print(f"\n{name}: look   style change %   pixel change   levels from {result['last']}   objective")
        for row in result["looks"]:
            print(f"{'':{len(name)}}  {row['iteration']:4d} {row['style_change_percent']:16.2f} "
                  f"{row['pixel_change_levels']:14.2f} {row['levels_from_last']:17.1f} {row['objective']:11.4f}")
        last_key = f"vs_{result['last']}"
        for threshold, stop in result["stops"].items():
            where = ("never" if stop is None else
                     f"ends after {stop['iterations']} iterations, objective {stop['objective']:.4f} "
                     f"({100 * stop['vs_200']:+.1f}% vs 200, {100 * stop[last_key]:+.1f}% vs {result['last']})")
            print(f"  stop_change {threshold}%: {where}")
        write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
