"""The throughput levers of issue 12, measured one at a time (a documented experiment, not a test).

    python -m benchmarks.levers [--size 256] [--rounds 3] [--iterations 6] [--json docs/bench/levers.json]

Each lever is a variant of the engine's optimisation step (`engine.optimize.optimize_image`:
L-BFGS over the image, VGG-16 to relu5_1 with the default layers, packaged weights), timed
in a fresh child process; variants run interleaved, round after round, and the best
seconds per iteration of each is kept, with the load average at each run.  The plain
tutorial loop (`benchmarks.plain_loop`) runs in the same rounds for reference.  A profile
of one forward + backward shows where the time goes (`--profile`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "plain": "the tutorial loop (benchmarks/plain_loop.py), L-BFGS max_iter 20, history 100",
    "engine": "engine.optimize.optimize_image as it is",
    "threads1": "engine, torch.set_num_threads(1)",
    "channels_last": "engine, network and image in channels_last (oneDNN NHWC convolutions)",
    "inplace_relu": "engine, ReLU(inplace=True): one buffer less per layer",
    "history100": "engine with L-BFGS history 100 (the tutorial's) instead of 50",
    "compile": "engine, torch.compile of the feature network (compile time reported apart)",
}


def child(spec: dict) -> dict:
    import torch

    from benchmarks.plain_loop import build_model, engine_network, engine_equivalent_weights, run_style_transfer
    from benchmarks.speed_images import pair

    variant, size, iterations, warmup = spec["variant"], spec["size"], spec["iterations"], spec["warmup"]
    if variant == "threads1":
        torch.set_num_threads(1)
    from engine.targets import content_targets, style_grams, style_at
    from engine.tensors import to_tensor

    cpu = torch.device("cpu")
    content, style = pair("landscape-strokes", size, size)
    content_t, style_t = to_tensor(content, cpu), to_tensor(style_at(style, size, size, 1.0), cpu)
    net, content_layers, style_layers = engine_network()
    stamps: list[float] = []
    if variant == "plain":
        plain = build_model(net, content_layers, style_layers, style_t, content_t)
        engine_equivalent_weights(plain)
        run_style_transfer(plain, content_t, warmup + iterations, lambda k, t: stamps.append(t))
        return _result(stamps, warmup, iterations)

    from engine.optimize import Targets, optimize_image
    from engine.options import StyleOptions
    from engine.progress import Reporter

    net = net.truncated(content_layers + style_layers)
    autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    targets = Targets(content_targets(net, content_t, content_layers, autocast),
                      style_grams(net, [style_t], [1.0], style_layers, autocast))
    if variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        content_t = content_t.contiguous(memory_format=torch.channels_last)
    if variant == "inplace_relu":
        for module in net.features:
            if isinstance(module, torch.nn.ReLU):
                module.inplace = True
    compile_seconds = None
    if variant == "compile":
        start = time.perf_counter()
        net.forward = torch.compile(net.forward, dynamic=False)
        compile_seconds = start
    options = StyleOptions(seed=0)
    layer_weights = dict.fromkeys(style_layers, 1.0)
    total = warmup + iterations
    if variant == "history100":
        _patch_lbfgs_history(100)
    reporter = Reporter(total, lambda p: stamps.append(time.perf_counter()), None)
    optimize_image(net, content_t, targets, options, layer_weights, total, reporter, autocast)
    result = _result(stamps, warmup, iterations)
    if compile_seconds is not None:
        result["first_iteration_s"] = stamps[0] - compile_seconds  # compile + one step
    return result


def _patch_lbfgs_history(history: int) -> None:
    import torch

    original = torch.optim.LBFGS.__init__

    def init(self, params, **kw):
        kw["history_size"] = history
        original(self, params, **kw)

    torch.optim.LBFGS.__init__ = init


def _result(stamps: list[float], warmup: int, iterations: int) -> dict:
    seconds = (stamps[warmup + iterations - 1] - stamps[warmup - 1]) / iterations
    return {"seconds_per_iteration": seconds, "it_per_min": 60 / seconds}


def run_child(spec: dict, timeout: float = 1800) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.levers", "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1], "load_before": load}
    return {**json.loads(lines[-1]), "load_before": load, "load_after": os.getloadavg()[0]}


def profile(size: int) -> list[dict]:
    """Self CPU time per operator of two forward + backward passes of the engine's network."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from benchmarks.plain_loop import engine_network

    net, content_layers, style_layers = engine_network()
    layers = content_layers + style_layers
    net = net.truncated(layers)
    x = torch.rand(1, 3, size, size, requires_grad=True)

    def step():
        feats = net(x, layers)
        sum(f.pow(2).mean() for f in feats.values()).backward()

    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:8]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", type=Path, default=Path("docs/bench/levers.json"))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    report = {"size": args.size, "iterations": args.iterations, "warmup": args.warmup, "variants": VARIANTS,
              "runs": {v: [] for v in variants}}
    if args.profile:
        report["profile"] = profile(args.size)
        for row in report["profile"]:
            print(f"{row['op']:45} {100 * row['share']:5.1f}%")
    for r in range(args.rounds):
        for v in variants:
            res = run_child({"variant": v, "size": args.size, "iterations": args.iterations, "warmup": args.warmup})
            report["runs"][v].append(res)
            print(f"round {r + 1} {v:16} {res.get('it_per_min', float('nan')):7.1f} it/min "
                  f"load {res['load_before']:.1f} {res.get('error', '')}", flush=True)
    base = None
    print(f"\n{'variant':16} {'best it/min':>11}  vs engine")
    report["best"] = {}
    for v in variants:
        ok = [r["it_per_min"] for r in report["runs"][v] if "it_per_min" in r]
        report["best"][v] = max(ok) if ok else None
    base = report["best"].get("engine")
    for v in variants:
        best = report["best"][v]
        ratio = f"{best / base:.3f}" if best and base else "-"
        print(f"{v:16} {best or float('nan'):11.1f}  {ratio}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
