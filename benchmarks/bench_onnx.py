"""onnxruntime vs torch feature extraction, and fast-mode frames per second.

Prints a table and writes JSON (docs/onnx-and-fast-mode.md shows the numbers).
Each row has the best and the median of `--repeat` runs after one warm-up run;
the load average is recorded too, because a shared machine slows every number.

Run from the repository root: `python -m benchmarks.bench_onnx [--training] ...`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine import losses, onnx_export
from engine.cli.common import ints, names, run_command
from engine.errors import EngineError
from engine.fast.inference import apply
from engine.fast.net import OUTPUT_NAME, TransformerNet
from engine.fast.training import training_step
from engine.model import prepare_network
from engine.options import StyleOptions
from engine.tensors import pick_device
from engine.weights import load_network

from . import machine, timings, write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--feature-sizes", type=ints, default=(256, 512))
    p.add_argument("--widths", type=names, default=("default", "small"))
    p.add_argument("--weights", default="packaged", help="feature-network weights (speed is the same for random)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--training", action="store_true", help="also time fast-mode training steps (slow on a CPU)")
    p.add_argument("--json-out", default="docs/bench-onnx.json")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(report, build_parser().parse_args(argv), "bench_onnx")


def report(args: argparse.Namespace) -> int:
    """Run, print the table, write the JSON."""
    if args.repeat < 1:
        raise EngineError("--repeat must be at least 1")
    result = run(args)
    print(f"{'test':48} {'backend':36} {'size':>10} {'best s':>8} {'median s':>9} {'best /s':>8}")
    for r in result["rows"]:
        print(f"{r['test']:48} {r['backend']:36} {r['size']:>10} {r['seconds_best']:8.3f} "
              f"{r['seconds_median']:9.3f} {r['per_second_best']:8.2f}")
    print(f"load average (start, end): {result['machine']['load_average_start_end']}")
    print(f"wrote {write_json(result, args.json_out)}")
    return 0


def timed(fn, repeat: int) -> dict:
    """Best and median seconds of `repeat` calls after one warm-up call.

    The best run is the headline: on a shared machine other jobs only ever add time.
    """
    times = timings(fn, repeat)
    best = min(times)
    return {"seconds_best": round(best, 4), "seconds_median": round(statistics.median(times), 4),
            "per_second_best": round(1 / best, 3)}


def torch_call(fn, device: torch.device):
    """`fn` without autograd, waiting for the GPU so the timing covers the work."""

    def call():
        with torch.no_grad():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return call


def bench_features(sizes: list[int], repeat: int, folder: Path, weights: str, device: str) -> list[dict]:
    """VGG-16 up to relu5_1 with the default content and style layers, torch vs onnxruntime."""
    net = load_network("vgg16", weights, "max")
    layers = tuple(dict.fromkeys(net.spec.content_layers + net.spec.style_layers))
    net = net.truncated(layers)
    session = onnx_export.session(onnx_export.export_features(net, layers, folder / "vgg16.onnx"), device)
    torch_device = pick_device(device)
    net = net.to(torch_device)
    rows = []
    for size in sizes:
        image = torch.rand(1, 3, size, size)
        on_device = image.to(torch_device)
        as_array = image.numpy()
        runs = {
            f"torch ({torch_device.type})": torch_call(lambda: net(on_device, layers), torch_device),
            f"onnxruntime ({session.get_providers()[0]})": lambda: onnx_export.run(session, as_array),
        }
        for backend, fn in runs.items():
            rows.append({"test": "features vgg16 relu1_1..relu5_1", "weights": weights, "backend": backend,
                         "size": f"{size}x{size}", **timed(fn, repeat)})
    return rows


def bench_fast(sizes: list[tuple[int, int]], widths: list[str], repeat: int, folder: Path, device: str) -> list[dict]:
    """Untrained transformation networks (speed does not depend on the weights), torch vs onnxruntime."""
    rows = []
    for width in widths:
        transformer = TransformerNet(width).eval()
        example = torch.rand(1, 3, 64, 64)
        path = onnx_export.export_module(transformer, example, folder / f"fast-{width}.onnx", [OUTPUT_NAME])
        session = onnx_export.session(path, device, arena=True)
        torch_device = pick_device(device)
        transformer = transformer.to(torch_device)
        for height, w in sizes:
            frame = np.random.default_rng(0).random((height, w, 3), dtype=np.float32)
            batch = np.ascontiguousarray(frame.transpose(2, 0, 1)[None])
            on_device = torch.from_numpy(batch).to(torch_device)
            onnx_backend = f"onnxruntime ({session.get_providers()[0]})"
            torch_run = torch_call(lambda: transformer(on_device), torch_device)
            for what, backend, fn in (
                ("network only", f"torch ({torch_device.type})", torch_run),
                ("network only", onnx_backend, lambda: onnx_export.run(session, batch)),
                ("apply() per frame", onnx_backend, lambda: apply(path, frame, device)),
            ):
                rows.append({"test": f"fast mode, width {width}, {what}", "backend": backend,
                             "size": f"{w}x{height}", **timed(fn, repeat)})
    return rows


def bench_training(crops: list[int], batch: int, repeat: int, weights: str, device: str) -> list[dict]:
    """Seconds per fast-mode training step (transformer + VGG-16 losses, forward and backward)."""
    options = StyleOptions(weights=weights, device=device)
    net, plan, torch_device = prepare_network(options)
    rows = []
    for crop in crops:
        transformer = TransformerNet().to(torch_device)
        optimizer = torch.optim.Adam(transformer.parameters())
        batch_t = torch.rand(batch, 3, crop, crop, device=torch_device)
        with torch.no_grad():
            grams = {name: losses.gram(f) for name, f in net(batch_t[:1], plan.style).items()}

        def step():
            training_step(transformer, net, optimizer, batch_t, grams, options, plan)  # its float() waits for a GPU

        rows.append({"test": f"fast-mode training step, batch {batch}", "weights": weights,
                     "backend": f"torch ({torch_device.type})", "size": f"{crop}x{crop}", **timed(step, repeat)})
    return rows


def run(args: argparse.Namespace) -> dict:
    started = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = bench_features(args.feature_sizes, args.repeat, folder, args.weights, args.device)
        rows += bench_fast([(512, 512), (1080, 1920)], args.widths, args.repeat, folder, args.device)
    if args.training:
        rows += bench_training([128, 256], 2, args.repeat, args.weights, args.device)
    return {
        "machine": {
            **machine(),
            "onnxruntime_cuda": onnx_export.cuda_works(),
            "load_average_start_end": [round(started, 2), round(os.getloadavg()[0], 2)],
        },
        "repeat": args.repeat,
        "rows": rows,
    }


if __name__ == "__main__":
    sys.exit(main())
