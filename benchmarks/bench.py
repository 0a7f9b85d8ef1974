"""Optimisation speed, peak memory and FLOP/s, beside the 2016 study.

Each measurement runs in a fresh child process, so its peak memory (VmHWM on
Linux, `torch.cuda.max_memory_allocated` on a GPU) belongs to that size alone.
Speed is the real optimisation loop (`optimize_image`: L-BFGS, the model's
default layers, truncated net), timed after warm-up iterations.  FLOPs are
counted from the layer shapes (forward + input-gradient backward of every conv,
plus the Gram matmuls) and compared with a large 3x3 convolution timed on the
same device, i.e. how close the loop comes to what the machine's conv kernels
can do.  Tiled rows time whole `stylize` runs that tiling makes fit.

Run from the repository root: `python -m benchmarks.bench [--plot] ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from engine.cli.common import SAMPLES, ints, names, run_command
from engine.errors import EngineError
from engine.options import MODELS, PRECISIONS

from . import machine, run_child, timings, write_json

# Where `child_main` runs each measurement (this module, also under `python -m`).
CHILD = "benchmarks.bench"
DEFAULT_JSON = Path("docs/bench/bench.json")
DEFAULT_PLOT = Path("docs/bench/bench.png")
RANDOM_NOTE = "random (seeded He init): speed and memory only; the images mean nothing"

# Iterations per minute reported by the 2016 study (issue 2).  The study's "VGG" is
# listed beside vgg19, neural-style's default; the GTX 960 NIN figure has no size
# in the issue and is shown at 128 px like the CPU one.
STUDY_2016 = {
    "cpu": {"name": "i5-4460 (4 cores)", "vgg19": {64: 94.2, 128: 71.4, 256: 32.0}, "nin": {128: 108.9}},
    "cuda": {"name": "GTX 960", "vgg19": {64: 847.8, 128: 721.9, 256: 286.7}, "nin": {128: 980.0}},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=names, default=MODELS, help="comma-separated (default: all)")
    p.add_argument("--sizes", type=ints, default=(64, 128, 256, 512, 1024), help="square sides in pixels")
    p.add_argument("--tiled-sizes", type=_shapes, default=((2048, 2048), (1080, 1920)),
                   help="WxH or N, timed as whole tiled stylize runs ('' for none)")
    p.add_argument("--tiled-models", type=names, default=("vgg16",))
    p.add_argument("--devices", type=names, help="cpu,cuda,mps (default: every one available)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (kernel set-up)")
    p.add_argument("--tiled-iterations", type=int, default=2, help="iterations of each tiled run (per pixel)")
    p.add_argument("--tile-size", type=int, default=0, help="tiled rows: 0 = by free memory")
    p.add_argument("--weights", default="random", help="random (default), packaged or a file; speed does not depend on it")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each child (default: torch's)")
    p.add_argument("--microbench-size", type=int, default=128, help="side of the 256-channel conv microbenchmark")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per measurement before it is abandoned")
    p.add_argument("--seams", type=int, metavar="SIZE",
                   help="also compare a tiled and an untiled run at SIZE px (half-size tiles, packaged weights)")
    p.add_argument("--seam-iterations", type=int, default=40)
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    p.add_argument("--plot", type=Path, nargs="?", const=DEFAULT_PLOT, help=f"write a PNG (default path {DEFAULT_PLOT})")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(run, build_parser().parse_args(argv), "bench")


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    """"1920x1080,2048" -> ((1080, 1920), (2048, 2048)) as (height, width)."""
    shapes = []
    for word in names(text):
        w, _, h = word.partition("x")
        try:
            shapes.append((int(h or w), int(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes like 2048 or 1920x1080, got {word!r}") from None
    return tuple(shapes)


def run(args: argparse.Namespace) -> int:
    unknown = [m for m in args.models + args.tiled_models if m not in MODELS]
    if unknown:
        raise EngineError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if args.iterations < 1 or args.warmup < 1 or args.tiled_iterations < 1:
        raise EngineError("--iterations, --warmup and --tiled-iterations must be at least 1")
    from engine.tensors import available_devices

    present = available_devices()[::-1]  # CPU first
    devices = list(args.devices or present)
    missing = [d for d in devices if d not in present]
    if missing:
        raise EngineError(f"device {missing[0]!r} is not available here (available: {', '.join(present)})")
    common = {"weights": args.weights, "precision": args.precision, "threads": args.threads}
    report = {
        "machine": machine(),
        "settings": {**common, "iterations": args.iterations, "warmup": args.warmup,
                     "tiled_iterations": args.tiled_iterations, "optimizer": "lbfgs", "layers": "model defaults"},
        "weights_note": RANDOM_NOTE if args.weights == "random" else args.weights,
        "study_2016": STUDY_2016,
        "not_measured": {d: "device not available on this machine" for d in ("cuda", "mps") if d not in present},
        "microbench": {},
        "rows": [],
        "tiled": [],
    }
    _header()
    for device in devices:
        bench = run_child(CHILD, {"kind": "conv", "device": device, "size": args.microbench_size, **common}, args.timeout)
        report["microbench"][device] = bench
        print(f"{device}: 3x3 conv 256->256 at {args.microbench_size} px: "
              f"{bench.get('forward_gflops', 0):.0f} GFLOP/s forward, {bench.get('train_gflops', 0):.0f} forward+backward")
        for model in args.models:
            for size in args.sizes:
                spec = {"kind": "loop", "device": device, "model": model, "height": size, "width": size,
                        "iterations": args.iterations, "warmup": args.warmup, **common}
                row = run_child(CHILD, spec, args.timeout)
                row.update(model=model, size=size, device=device, study=_study(device, model, size),
                           load_average=os.getloadavg()[0])
                if "gflop_per_iteration" in row and bench.get("train_gflops"):
                    row["share_of_conv_microbench"] = row["gflops"] / bench["train_gflops"]
                report["rows"].append(row)
                _print_row(row)
                write_json(report, args.json_out)
        for model in args.tiled_models:
            for height, width in args.tiled_sizes:
                spec = {"kind": "tiled", "device": device, "model": model, "height": height, "width": width,
                        "iterations": args.tiled_iterations, "tile_size": args.tile_size, **common}
                row = run_child(CHILD, spec, args.timeout)
                row.update(model=model, height=height, width=width, device=device, load_average=os.getloadavg()[0])
                report["tiled"].append(row)
                _print_tiled(row)
                write_json(report, args.json_out)
    for device, why in report["not_measured"].items():
        print(f"{device}: not measured ({why})")
    if args.seams:
        report["seams"] = seam_comparison(args.seams, args.seam_iterations, args.json_out.parent)
        print("seams: gradient energy at tile borders / elsewhere: "
              f"tiled {report['seams']['tiled']['border_ratio']:.3f}, untiled {report['seams']['untiled']['border_ratio']:.3f}")
    write_json(report, args.json_out)
    print(f"wrote {args.json_out}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _study(device: str, model: str, size: int) -> float | None:
    return STUDY_2016.get(device, {}).get(model, {}).get(size)


def _header() -> None:
    print(f"{'model':6} {'size':>5} {'device':6} {'it/min':>8} {'2016':>7} {'peak MB':>8} "
          f"{'GFLOP/it':>9} {'GFLOP/s':>8} {'of conv':>7}")


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:6} {row['size']:>5} {row['device']:6} failed: {row['error']}")
        return
    study = f"{row['study']:.1f}" if row["study"] else "-"
    share = f"{100 * row['share_of_conv_microbench']:.0f}%" if "share_of_conv_microbench" in row else "-"
    print(f"{row['model']:6} {row['size']:>5} {row['device']:6} {row['it_per_min']:8.1f} {study:>7} "
          f"{row['peak_mb']:8.0f} {row['gflop_per_iteration']:9.1f} {row['gflops']:8.1f} {share:>7}")


def _print_tiled(row: dict) -> None:
    shape = f"{row['width']}x{row['height']}"
    if "error" in row:
        print(f"tiled {row['model']} {shape} {row['device']}: failed: {row['error']}")
        return
    tiles = f"{row['tile']} px tiles, {row['tiles_per_pass']} per pass" if row["tile"] else "untiled (fits)"
    print(f"tiled {row['model']} {shape} {row['device']}: {row['seconds']:.0f} s for {row['iterations']} it/pixel "
          f"({row['it_per_min']:.2f} full-image it/min), {tiles}, peak {row['peak_mb']:.0f} MB")


def child_main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    measure = {"loop": measure_loop, "tiled": measure_tiled, "conv": measure_conv}[spec["kind"]]
    print(json.dumps(measure(spec)))


def measure_loop(spec: dict) -> dict:
    """Iterations per minute and peak memory of the optimisation loop at one size (the engine's own measurement,
    `neural-style bench`), with the FLOPs of an iteration."""
    from engine.cli.devices import measure_loop as engine_loop, sample_images
    from engine.model import prepare_network
    from engine.options import StyleOptions
    from engine.tensors import to_tensor

    options = StyleOptions(model=spec["model"], weights=spec["weights"], precision=spec["precision"],
                           device=spec["device"], seed=0)
    row = engine_loop(options, spec["height"], spec["width"], spec["iterations"], spec["warmup"])
    net, plan, device = prepare_network(options)
    content = to_tensor(sample_images(spec["height"], spec["width"])[0], device)
    flops = iteration_flops(net, content, plan.layers, plan.style)
    return {**row, "gflop_per_iteration": flops / 1e9, "gflops": flops / row["seconds_per_iteration"] / 1e9,
            "lbfgs_history": min(spec["warmup"] + spec["iterations"], 50)}


def iteration_flops(net, image, layers: tuple[str, ...], style_layers: tuple[str, ...]) -> float:
    """FLOPs of one loss-and-gradient evaluation: each conv forward and its input gradient
    (weights are frozen, so no weight gradient), plus each Gram matmul and its gradient."""
    import torch

    convs = []

    def count(module, inputs, output):
        c_in, kh, kw = module.in_channels // module.groups, *module.kernel_size
        convs.append(2 * output.numel() * c_in * kh * kw)

    hooks = [m.register_forward_hook(count) for m in net.features if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            feats = net(image, layers)
    finally:
        for h in hooks:
            h.remove()
    grams = sum(2 * feats[n].shape[1] ** 2 * feats[n].shape[2] * feats[n].shape[3] for n in style_layers)
    return 2.0 * (sum(convs) + grams)


def measure_conv(spec: dict) -> dict:
    """Best GFLOP/s of a 3x3, 256->256 convolution on 1x256xSxS: forward, and forward + input gradient."""
    import torch

    from engine.tensors import pick_device

    device = pick_device(spec["device"])
    size = spec["size"]
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device).requires_grad_(False)
    x = torch.rand(1, 256, size, size, device=device, requires_grad=True)
    flops = 2 * 256 * 256 * 9 * size * size

    def fastest(step) -> float:
        """Fastest of 10 runs: the limit the kernels reach, not an average over interruptions."""
        return min(timings(lambda: (step(), _sync(device)), 10))

    with torch.no_grad():
        forward = fastest(lambda: conv(x))
    train = fastest(lambda: torch.autograd.grad(conv(x).sum(), x))
    return {"size": size, "forward_gflops": flops / forward / 1e9, "train_gflops": 2 * flops / train / 1e9}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_tiled(spec: dict) -> dict:
    """A whole single-scale `stylize` at a size tiling makes fit: time, tiles and peak memory."""
    from engine.options import StyleOptions
    from engine.pipeline import stylize
    from engine.cli.devices import sample_images
    from engine.memory import PeakMemory
    from engine.tensors import pick_device

    device = pick_device(spec["device"])
    content, style = sample_images(spec["height"], spec["width"])
    steps: list[tuple[int, int]] = []  # (tile side, tiles per pass) of each optimizer step; 0s when untiled
    options = StyleOptions(model=spec["model"], weights=spec["weights"], precision=spec["precision"],
                           device=spec["device"], iterations=spec["iterations"], scales=1,
                           tile_size=spec["tile_size"], seed=0, stop_change=0.0)
    memory = PeakMemory(device)
    memory.reset()
    with tempfile.TemporaryDirectory() as cache:  # no cached Grams: time what a first run pays
        start = time.perf_counter()
        stylize(content, [style], options.replace(cache_dir=cache),
                progress=lambda p: (memory.sample(), steps.append((p.tile_size, p.tiles))))
        seconds = time.perf_counter() - start
    tiled = [step for step in steps if step[0]]
    tile = tiled[-1][0] if tiled else None  # the size that ran (an out-of-memory retry shrinks it)
    per_pixel = -(-spec["iterations"] // options.tile_passes) * options.tile_passes if tile else spec["iterations"]
    return {
        "seconds": seconds, "iterations": per_pixel, "it_per_min": 60 * per_pixel / seconds,
        "tile": tile, "tiles_per_pass": max((tiles for _, tiles in tiled), default=0),
        "passes": options.tile_passes if tile else 0, "optimizer_steps": len(steps), "peak_mb": memory.peak() / 2**20,
    }


def seam_comparison(size: int, iterations: int, folder: Path) -> dict:
    """Stylize the sample at `size` px untiled and in half-size tiles; compare gradient energy
    along every tile border of every pass (a seam would raise it) with the rest of the image."""
    import numpy as np

    from engine.cli.devices import sample_images
    from engine.images import read_image, write_image
    from engine.options import StyleOptions
    from engine.pipeline import stylize
    from engine.tiling import grid

    content, style = sample_images(*_fit(read_image(SAMPLES / "content.png").shape, size))
    tile = size // 2
    options = StyleOptions(model="vgg16", weights="packaged", iterations=iterations, seed=0, tile_passes=2,
                           stop_change=0.0)
    height, width = content.shape[:2]
    borders_x, borders_y = set(), set()
    overlap = min(options.tile_overlap, tile // 4)
    for p in range(options.tile_passes):
        for box in grid(height, width, tile, overlap, p, options.tile_passes):
            borders_y.update(v for v in (box.y0, box.y1) if 0 < v < height)
            borders_x.update(v for v in (box.x0, box.x1) if 0 < v < width)
    near = np.zeros((height, width), bool)
    for v in borders_y:
        near[max(0, v - 2) : v + 2, :] = True
    for v in borders_x:
        near[:, max(0, v - 2) : v + 2] = True
    result = {"size": [width, height], "tile": tile, "overlap": overlap, "passes": options.tile_passes,
              "iterations": iterations, "border_pixels": int(near.sum())}
    folder.mkdir(parents=True, exist_ok=True)
    for name, tile_size in (("untiled", -1), ("tiled", tile)):
        start = time.perf_counter()
        image = stylize(content, [style], options.replace(tile_size=tile_size))
        energy = np.zeros((height, width))
        energy[:, :-1] += (np.diff(image, axis=1) ** 2).sum(axis=2)
        energy[:-1, :] += (np.diff(image, axis=0) ** 2).sum(axis=2)
        write_image(folder / f"seams_{name}.png", image)
        result[name] = {"seconds": time.perf_counter() - start, "border_energy": float(energy[near].mean()),
                        "other_energy": float(energy[~near].mean()),
                        "border_ratio": float(energy[near].mean() / energy[~near].mean())}
        result[name]["image"] = f"seams_{name}.png"
    untiled, tiled = (read_image(folder / f"seams_{n}.png")[..., :3] for n in ("untiled", "tiled"))
    result["mean_abs_difference"] = float(np.abs(tiled - untiled).mean())
    return result


def _fit(shape, size: int) -> tuple[int, int]:
    factor = size / max(shape[:2])
    return round(shape[0] * factor), round(shape[1] * factor)


def plot(report: dict, path: Path) -> None:
    """Speed (with the study's points), peak memory and FLOP/s against image size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in report["rows"] if "error" not in r]
    fig, (speed, mem, rate) = plt.subplots(1, 3, figsize=(16, 4.8))
    for (model, device), colour in zip(sorted({(r["model"], r["device"]) for r in rows}), plt.cm.tab10.colors):
        mine = sorted((r for r in rows if (r["model"], r["device"]) == (model, device)), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        label = f"{model} {device}"
        speed.plot(sizes, [r["it_per_min"] for r in mine], "o-", color=colour, label=label)
        mem.plot(sizes, [r["peak_mb"] for r in mine], "o-", color=colour, label=label)
        rate.plot(sizes, [r["gflops"] for r in mine], "o-", color=colour, label=label)
        for study_device, marker in (("cpu", "s"), ("cuda", "^")):
            points = report["study_2016"][study_device].get(model, {})
            if points:
                speed.plot(list(points), list(points.values()), marker, color=colour, markerfacecolor="none",
                           markersize=9, label=f"2016 {report['study_2016'][study_device]['name']} ({model})")
    for device, bench in report["microbench"].items():
        if "train_gflops" in bench:
            rate.axhline(bench["train_gflops"], linestyle="--", color="grey", label=f"3x3 conv microbench ({device})")
    for ax, title, unit in ((speed, "optimisation speed", "iterations / minute"), (mem, "peak memory (process)", "MB"),
                            (rate, "achieved conv+Gram throughput", "GFLOP/s")):
        ax.set(yscale="log", title=title, xlabel="image side (px)", ylabel=unit)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(True, which="both", alpha=0.3)
    speed.legend(fontsize=7)
    rate.legend(fontsize=7)
    fig.suptitle(f"neural-style bench on {report['machine']['cpu']} ({report['machine']['cpu_count']} cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
