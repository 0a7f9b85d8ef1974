"""Issue 24: the GPU figures in one run, under 5 minutes on a CUDA or Apple MPS machine.

    bash benchmarks/gpu.sh [--device auto|cuda|mps] [--json docs/bench/gpu.json] [--budget 280]
    python -m benchmarks.gpu --dry          # tiny sizes on whatever device, end to end (the tests run this)

Prints a table and writes JSON for:

1. `study`: the seed paper's table, iterations per minute at 64, 128 and 256 px for VGG-19 and NIN
   (`engine.cli.devices.measure_loop`: the real L-BFGS loop, default layers), beside the 2016 study's figures;
2. `512px`: a 512x512 `stylize`, 500 iterations at one scale, untiled: seconds and peak memory;
3. `1080p`: the same at 1920x1080 (tiled only if the memory model says it must be): seconds and peak memory;
4. `largest`: the largest of 7680x4320, 3840x2160, 2560x1440 and 1920x1080 that a tiled `stylize`
   (one scale, 2 iterations per pixel) completes, with its peak memory, tiles and time, and the largest square
   the memory model optimises untiled;
5. `precision`: fp16 and bf16 against fp32 where the device offers them (`engine.tensors.precision_problem`):
   iterations per minute at 512 px, and a judge of the picture: each precision stylizes the bundled sample at
   512 px (packaged VGG-16, 300 iterations, seed 0, stop off) and benchmarks/judge.py scores it; the mean
   8-bit difference to the fp32 picture says how far the picture moved.

Speed rows use random weights (speed and memory do not depend on them); the pictures use the packaged
VGG-16 when it is in the cache (else random, said in the JSON).  Every section runs within what is left of
`--budget` seconds; a section that would start after it is listed as skipped, so the whole run stays under
five minutes.  `--dry` runs every section at toy sizes and iteration counts (seconds on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import machine, write_json
from benchmarks.bench import STUDY_2016

DEFAULT_JSON = Path("docs/bench/gpu.json")
LARGEST = ((4320, 7680), (2160, 3840), (1440, 2560), (1080, 1920))

FULL = {"study_sizes": (64, 128, 256), "study_iterations": 50, "warmup": 5, "square": 512, "long_iterations": 500,
        "hd": (1080, 1920), "largest": LARGEST, "largest_iterations": 2, "largest_tile": 0,
        "precision_size": 512, "precision_iterations": 300, "speed_iterations": 30}
DRY = {"study_sizes": (96,), "study_iterations": 1, "warmup": 1, "square": 64, "long_iterations": 3,
       "hd": (48, 96), "largest": ((48, 96),), "largest_iterations": 2, "largest_tile": 64,
       "precision_size": 64, "precision_iterations": 3, "speed_iterations": 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--dry", action="store_true", help="toy sizes on any device, end to end in seconds")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for the whole run (sections past it skip)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    from engine.tensors import describe_device, pick_device

    device = pick_device(args.device)
    if device.type == "cpu" and not args.dry:
        print("no CUDA or MPS device here: run with --dry for a check at toy sizes", file=sys.stderr)
        return 2
    plan = DRY if args.dry else FULL
    deadline = time.perf_counter() + args.budget
    report = {"machine": machine(), "device": describe_device(device), "dry": args.dry, "plan": plan,
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "skipped": {}}
    print(f"{report['device']}{' (dry run: toy sizes)' if args.dry else ''}", flush=True)
    sections = (("study", study), ("512px", square_run), ("1080p", hd_run), ("largest", largest),
                ("precision", precision))
    for name, section in sections:
        left = deadline - time.perf_counter()
        if left <= 0:
            report["skipped"][name] = "time budget spent"
            print(f"{name}: skipped (time budget spent)")
            continue
        start = time.perf_counter()
        report[name] = section(device, plan)
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        write_json(report, args.json)
    write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


def _options(device, **changes):
    from engine.options import StyleOptions

    return StyleOptions(**{"device": device.type, "weights": "random", "seed": 0, "stop_change": 0.0, **changes})


def _say(text: str) -> None:
    print(text, flush=True)


def study(device, plan: dict) -> list[dict]:
    from engine.cli.devices import measure_loop

    rows = []
    _say(f"study: {'model':6} {'size':>5} {'it/min':>9} {'2016 GTX 960':>12} {'peak MB':>8}")
    for model in ("vgg19", "nin"):
        for size in plan["study_sizes"]:
            row = {"model": model, "size": size, "study_gtx960": STUDY_2016["cuda"].get(model, {}).get(size)}
            try:
                row.update(measure_loop(_options(device, model=model), size, size,
                                        plan["study_iterations"], plan["warmup"]))
                _say(f"       {model:6} {size:>5} {row['it_per_min']:9.0f} {row['study_gtx960'] or '-':>12} "
                     f"{row['peak_mb']:8.0f}")
            except RuntimeError as exc:
                row["error"] = str(exc).splitlines()[0]
                _say(f"       {model:6} {size:>5} failed: {row['error']}")
            rows.append(row)
    return rows


def timed_stylize(device, height: int, width: int, iterations: int, **changes) -> dict:
    """One whole `stylize` of the sample at height x width, one scale: seconds, peak memory, tiles."""
    from engine.cli.devices import sample_images
    from engine.memory import PeakMemory
    from engine.pipeline import stylize

    content, style = sample_images(height, width)
    options = _options(device, iterations=iterations, scales=1, **changes)
    memory = PeakMemory(device)
    tiles: list[tuple[int, int]] = []

    def tick(p) -> None:
        memory.sample()
        if p.tile_size:
            tiles.append((p.tile_size, p.tiles))

    memory.reset()
    start = time.perf_counter()
    try:
        stylize(content, [style], options, progress=tick)
    except Exception as exc:  # out of memory (EngineError or RuntimeError): the row says so
        return {"height": height, "width": width, "iterations": iterations, "error": str(exc).splitlines()[0]}
    seconds = time.perf_counter() - start
    return {"height": height, "width": width, "iterations": iterations, "seconds": round(seconds, 2),
            "peak_mb": round(memory.peak() / 2**20), "memory_kind": memory.kind,
            "tile": tiles[-1][0] if tiles else None, "tiles_per_pass": tiles[-1][1] if tiles else 0}


def _show(label: str, row: dict) -> None:
    if "error" in row:
        _say(f"{label}: {row['width']}x{row['height']} failed: {row['error']}")
        return
    tiles = f", {row['tile']} px tiles ({row['tiles_per_pass']} per pass)" if row.get("tile") else ", untiled"
    _say(f"{label}: {row['width']}x{row['height']}, {row['iterations']} iterations: {row['seconds']:.1f} s, "
         f"peak {row['peak_mb']} MB{tiles}")


def square_run(device, plan: dict) -> dict:
    side = plan["square"]
    row = timed_stylize(device, side, side, plan["long_iterations"], tile_size=-1)
    _show("512px", row)
    return row


def hd_run(device, plan: dict) -> dict:
    row = timed_stylize(device, *plan["hd"], plan["long_iterations"], tile_size=0)
    _show("1080p", row)
    return row


def largest(device, plan: dict) -> dict:
    from engine.cli.devices import _geometry, largest_untiled_side
    from engine.memory import memory_budget

    options = _options(device)
    budget = memory_budget(device, options)
    out = {"largest_untiled_side": largest_untiled_side(budget, _geometry(options), options.optimizer),
           "budget_mb": round(budget / 2**20), "tried": []}
    for height, width in plan["largest"]:
        row = timed_stylize(device, height, width, plan["largest_iterations"], tile_size=plan["largest_tile"])
        out["tried"].append(row)
        _show("largest", row)
        if "error" not in row:
            out["fits"] = row
            break
    return out


def precision(device, plan: dict) -> list[dict]:
    from benchmarks.judge import Judge, levels_apart
    from engine.cli.devices import measure_loop, sample_images
    from engine.pipeline import stylize
    from engine.tensors import precision_problem

    size = plan["precision_size"]
    content, style = sample_images(size, size)
    weights = "packaged" if _packaged_available() else "random"
    judge = Judge(content, style, weights)
    rows, reference = [], None
    for name in ("fp32", "fp16", "bf16"):
        problem = precision_problem(device, name)
        if problem:
            rows.append({"precision": name, "refused": problem})
            _say(f"precision {name}: refused: {problem}")
            continue
        row = {"precision": name, "weights": weights}
        row.update(measure_loop(_options(device, precision=name), size, size, plan["speed_iterations"], plan["warmup"]))
        start = time.perf_counter()
        picture = stylize(content, [style], _options(device, precision=name, weights=weights, scales=1,
                                                     iterations=plan["precision_iterations"]))
        row["stylize_seconds"] = round(time.perf_counter() - start, 2)
        row["judge"] = judge(picture)
        reference = picture if name == "fp32" else reference
        row["levels_from_fp32"] = levels_apart(picture, reference) if reference is not None else None
        rows.append(row)
        _say(f"precision {name}: {row['it_per_min']:.0f} it/min at {size} px, picture: objective "
             f"{row['judge']['objective']:.4f}, {row['levels_from_fp32'] or 0:.2f} levels from fp32")
    return rows


def _packaged_available() -> bool:
    """Whether the packaged VGG-16 loads here without a download (a device machine may have no network)."""
    from engine.errors import EngineError
    from engine.weights import load_network

    try:
        load_network("vgg16", "packaged", "max")
    except EngineError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
