"""Issue 12: the engine's iterations per minute against a plain PyTorch-tutorial Gatys loop, same network and layers.

    python -m benchmarks.bench_speed [--sizes 256,512] [--rounds 3] [--json docs/bench/speed.json]

Iterations per minute of the engine's optimisation step (`engine.optimize.optimize_image`)
and of the plain loop (`benchmarks/plain_loop.py`) at each size, VGG-16 to relu5_1
with the engine's default layers, packaged weights.  Each measurement is a fresh
child process; the two alternate, round after round, and the best of the rounds
counts.  The load average is recorded with every run (the CPU may be shared).
How long each takes to a good picture is benchmarks/time_to_quality.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import load_average, machine, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path("docs/bench/speed.json")


def throughput(sizes: list[int], rounds: int, iterations: int, warmup: int) -> list[dict]:
    """Interleaved plain/engine child runs per size; best of `rounds`."""
    from benchmarks.levers import run_child

    rows = []
    for size in sizes:
        runs: dict[str, list[dict]] = {"plain": [], "engine": []}
        for r in range(rounds):
            for variant in ("plain", "engine"):
                res = run_child({"variant": variant, "size": size, "iterations": iterations, "warmup": warmup})
                runs[variant].append(res)
                print(f"  {size} px round {r + 1} {variant:6} {res.get('it_per_min', float('nan')):6.1f} it/min "
                      f"(load {res['load_before']:.1f}) {res.get('error', '')}", flush=True)
        best = {v: max((x["it_per_min"] for x in rs if "it_per_min" in x), default=None) for v, rs in runs.items()}
        ratio = best["engine"] / best["plain"] if best["engine"] and best["plain"] else None
        rows.append({"size": size, "best_it_per_min": best, "ratio": ratio, "runs": runs})
    return rows


def print_tables(report: dict) -> None:
    print(f"\n{'size':>5} {'plain it/min':>12} {'engine it/min':>13} {'ratio':>6}")
    for row in report.get("throughput", []):
        b = row["best_it_per_min"]
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        print(f"{row['size']:>5} {b['plain'] or float('nan'):12.1f} {b['engine'] or float('nan'):13.1f} {ratio:>6}")
    for key, why in report.get("not_measured", {}).items():
        print(f"{key}: not measured ({why})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512", help="sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    sizes = [int(t) for t in args.sizes.split(",") if t.strip()]
    report = {"machine": machine(), "load_at_start": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    print("throughput (iterations per minute, best of rounds):", flush=True)
    report["throughput"] = throughput(sizes, args.rounds, args.iterations, args.warmup)
    report["load_at_end"] = load_average()
    write_json(report, args.json)
    print_tables(report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
