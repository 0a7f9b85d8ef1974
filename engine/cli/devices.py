"""`neural-style bench`: speed and memory of the optimisation on each device this machine has.

For every device (CUDA, Apple MPS, CPU) and precision it prints iterations per
minute and the peak memory of the real optimisation loop (`optimize_image`:
L-BFGS, the model's default layers) at a few sizes, beside what the engine's
memory model (`engine.memory`) plans for the same size, the memory budget a run
gets there and the largest square it would optimise untiled.  A precision the
device has no native arithmetic for is listed with the reason it is refused
(`engine.tensors.precision_problem`).  `measure_loop` is the one timed loop;
the development benchmarks (benchmarks/bench.py, benchmarks/gpu.py) call it too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import EngineError
from ..options import MODELS, NUMBER_FORMATS, StyleOptions
from .common import SAMPLES, add_quiet, ints, names

MB = 2**20


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed and memory of the optimisation on each device",
                       description="Time the optimisation loop and measure its peak memory on each device and "
                                   "precision, beside the memory the engine plans for it (docs/benchmarks.md).")
    p.add_argument("--devices", default="all",
                   help="all (every device this torch can use here), auto (the one a run picks) or a comma list of "
                        "cpu, cuda, mps")
    p.add_argument("--precisions", type=names, default=NUMBER_FORMATS, help="comma list of fp32, fp16, bf16")
    p.add_argument("--sizes", type=ints, default=(256, 512), help="square sides in pixels")
    p.add_argument("--model", choices=MODELS, default="vgg16")
    p.add_argument("--weights", default="random",
                   help="random (default: speed and memory do not depend on the weights), packaged or a file")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (kernel selection)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    devices = chosen_devices(args.devices)
    unknown = [p for p in args.precisions if p not in NUMBER_FORMATS]
    if unknown:
        raise EngineError(f"unknown precision {unknown[0]!r}; choose from {', '.join(NUMBER_FORMATS)}")
    if args.iterations < 1 or args.warmup < 1 or not args.sizes or min(args.sizes) < 32:
        raise EngineError("--iterations and --warmup must be at least 1 and every size at least 32 px")
    report = {"model": args.model, "weights": args.weights, "iterations": args.iterations, "warmup": args.warmup,
              "devices": [device_report(d, args) for d in devices]}
    if args.json:
        from ..files import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
        if not args.quiet:
            print(f"wrote {args.json}")
    return 0


def chosen_devices(text: str) -> list[str]:
    """--devices as device names: "all" every available one (accelerators first), "auto" the one a run picks."""
    from ..tensors import available_devices, pick_device

    present = available_devices()
    if text == "all":
        return present
    if text == "auto":
        return [pick_device("auto").type]
    wanted = list(names(text))
    for name in wanted:
        if name not in ("cpu", "cuda", "mps"):
            raise EngineError(f"unknown device {name!r}; choose from all, auto, cpu, cuda, mps")
        if name not in present:
            raise EngineError(f"device {name!r} is not available here (available: {', '.join(present)})")
    return wanted


def device_report(name: str, args: argparse.Namespace) -> dict:
    """Figures for one device: its memory budget and model, then one row per precision and size."""
    from ..memory import bytes_per_pixel, free_memory, memory_budget
    from ..tensors import describe_device, pick_device, precision_problem

    device = pick_device(name)
    options = StyleOptions(model=args.model, weights=args.weights, device=name, seed=0)
    geo = _geometry(options)
    budget = memory_budget(device, options)
    untiled = largest_untiled_side(budget, geo, options.optimizer)
    info = {"device": name, "name": describe_device(device), "free_mb": round(free_memory(device) / MB),
            "budget_mb": round(budget / MB), "planned_bytes_per_pixel": round(bytes_per_pixel(geo, options.optimizer)),
            "largest_untiled_side": untiled, "rows": []}
    say = (lambda *a: None) if args.quiet else print
    say(f"{info['name']}\n  free {info['free_mb']} MB, a run plans with {info['budget_mb']} MB: "
        f"{info['planned_bytes_per_pixel']} bytes per pixel, so up to {untiled}x{untiled} untiled, larger in tiles")
    say(f"  {'precision':9} {'size':>5} {'it/min':>8} {'peak MB':>8} {'planned MB':>10}  memory measured as")
    for precision in args.precisions:
        problem = precision_problem(device, precision)
        if problem:
            info["rows"].append({"precision": precision, "refused": problem})
            say(f"  {precision:9} refused: {problem}")
            continue
        for size in args.sizes:
            row = {"precision": precision, "size": size}
            try:
                row.update(measure_loop(options.replace(precision=precision), size, size, args.iterations,
                                        args.warmup))
            except RuntimeError as exc:  # out of memory at this size, or a kernel the device lacks
                row["error"] = str(exc).splitlines()[0]
                say(f"  {precision:9} {size:>5} failed: {row['error']}")
            else:
                say(f"  {precision:9} {size:>5} {row['it_per_min']:8.1f} {row['peak_mb']:8.0f} "
                    f"{row['planned_mb']:10.0f}  {row['memory_kind']}")
            info["rows"].append(row)
    return info


def _geometry(options: StyleOptions):
    from ..memory import geometry
    from ..model import layer_plan
    from ..networks import FeatureNet

    net = FeatureNet(options.model, options.pooling)  # the architecture only: no weights needed
    return geometry(net.truncated(layer_plan(net, options).layers))


def largest_untiled_side(budget: int, geo, optimizer: str) -> int:
    """Side of the largest square the memory model optimises whole within `budget` (larger ones are tiled)."""
    from ..memory import tile_for_budget

    return tile_for_budget(budget, geo, optimizer)


def sample_images(height: int, width: int):
    """The bundled sample content and style, resized to height x width (RGB arrays)."""
    from ..images import read_image, resize

    content = resize(read_image(SAMPLES / "content.png")[..., :3], height, width)
    style = resize(read_image(SAMPLES / "style.png")[..., :3], height, width)
    return content, style


def measure_loop(options: StyleOptions, height: int, width: int, iterations: int, warmup: int = 1) -> dict:
    """Iterations per minute and peak memory of the optimisation loop at height x width (the sample images),
    `warmup` untimed iterations first; the convergence stop is off so every iteration runs.

    Peak memory is `engine.memory.PeakMemory`'s: the whole process at the loop's peak (`peak_mb`), what the
    loop added to what was in use before it (`loop_mb`), and what the no-grad target passes added
    (`targets_mb`); `planned_mb` is what the memory model plans for this size."""
    from ..memory import FIXED_BYTES, PeakMemory, bytes_per_pixel, geometry
    from ..model import prepare_network
    from ..optimize import Targets, optimize_image
    from ..progress import Reporter
    from ..targets import content_targets, style_grams
    from ..tensors import autocast_factory, to_tensor

    options = options.replace(stop_change=0.0)
    net, plan, device = prepare_network(options)
    autocast = autocast_factory(device, options.precision)
    content, style = (to_tensor(a, device) for a in sample_images(height, width))
    memory = PeakMemory(device)
    memory.reset()
    targets = Targets(content_targets(net, content, plan.content, autocast),
                      style_grams(net, [style], [1.0], plan.style, autocast))
    targets_peak = memory.peak() - memory.base
    stamps: list[float] = []

    def tick(_progress) -> None:
        memory.sample()
        stamps.append(time.perf_counter())  # L-BFGS reads the loss every step: the device has finished it

    total = warmup + iterations
    memory.reset()
    optimize_image(net, content, targets, options, plan.weights, total, Reporter(total, tick, None), autocast)
    seconds = (stamps[-1] - stamps[warmup - 1]) / iterations
    planned = FIXED_BYTES + height * width * bytes_per_pixel(geometry(net), options.optimizer)
    return {
        "height": height, "width": width, "iterations": iterations, "precision": options.precision,
        "it_per_min": 60 / seconds, "seconds_per_iteration": seconds,
        "peak_mb": memory.peak() / MB, "loop_mb": (memory.peak() - memory.base) / MB, "targets_mb": targets_peak / MB,
        "planned_mb": planned / MB, "memory_kind": memory.kind,
    }
