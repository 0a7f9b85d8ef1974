"""Issue 12: the engine against a plain PyTorch-tutorial Gatys loop, on the same network and layers.

    python -m benchmarks.bench_speed [--sizes 256,512] [--rounds 3] [--quality-sizes 384]
                                     [--json docs/bench/speed.json]

1. Throughput: iterations per minute of the engine's optimisation step
   (`engine.optimize.optimize_image`) and of the plain loop
   (`benchmarks/plain_loop.py`) at each size, VGG-16 to relu5_1 with the engine's
   default layers, packaged weights.  Each measurement is a fresh child process;
   the two alternate, round after round, and the best of the rounds counts.  The
   load average is recorded with every run (the CPU may be shared).
2. Time to quality: whole-process wall time of `neural-style stylize` with its
   default settings (a fresh cache holding only the weights, so the first-run
   costs are paid) against the plain loop's 300 iterations, the two started
   together so they share the machine's load (the first to finish leaves the
   CPU to the other, which favours the plain loop), on procedural image
   pairs the tests do not use (`benchmarks/speed_images.py`).  Both results are
   written as 8-bit PNGs and scored the same way: the plain loop's formulation
   (`F.mse_loss` of features and of Grams) on the same network, combined with
   per-layer weights under which it equals the engine's content + style
   objective (`plain_loop.engine_equivalent_weights`).  The plain loop's
   objective after each of its evaluations is recorded, so the table also says
   when the plain loop first reached the engine's final quality.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path("docs/bench/speed.json")
PLAIN_STEPS = 300


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


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


def write_pair(name: str, size: int, folder: Path) -> tuple[Path, Path]:
    """The pair's content (longest side `size`, 3:2) and style as PNG files."""
    from benchmarks.speed_images import pair
    from engine.images import write_image

    content, style = pair(name, round(size * 2 / 3), size)
    paths = folder / f"{name}-{size}-content.png", folder / f"{name}-{size}-style.png"
    write_image(paths[0], content)
    write_image(paths[1], style)
    return paths


def plain_command(content: Path, style: Path, out: Path, steps: int) -> list[str]:
    """The plain loop as a whole process: interpreter start to written PNG (its curve beside the PNG)."""
    return [sys.executable, "-m", "benchmarks.bench_speed", "--child-plain",
            json.dumps({"content": str(content), "style": str(style), "out": str(out), "steps": steps,
                        "curve": str(out.with_suffix(".curve.json"))})]


def engine_command(content: Path, style: Path, out: Path, cache: Path, extra: list[str]) -> list[str]:
    """`neural-style stylize` with default settings as a whole process."""
    return [sys.executable, "-m", "engine.cli", "stylize", str(content), str(style), "-o", str(out),
            "--cache-dir", str(cache), "--json", *extra]


def side_by_side(commands: dict[str, list[str]], timeout: float) -> dict[str, dict]:
    """Start the commands together, so they share whatever else loads the machine; time each to its exit.

    The first to finish leaves the CPU to the others, which favours the slower one.
    """
    load = _load()
    start = time.perf_counter()
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                    cwd=ROOT) for name, cmd in commands.items()}
    results: dict[str, dict] = {}
    pending = dict(procs)
    while pending:
        for name, proc in list(pending.items()):
            if proc.poll() is not None:
                out, err = proc.communicate()
                results[name] = {"wall_s": round(time.perf_counter() - start, 2), "load_before": load,
                                 "load_at_exit": _load(), "stdout": out}
                if proc.returncode:
                    results[name]["error"] = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                del pending[name]
            elif time.perf_counter() - start > timeout:
                proc.kill()
                proc.communicate()
                results[name] = {"error": f"timed out after {timeout:.0f} s", "load_before": load}
                del pending[name]
        time.sleep(0.2)
    return results


def plain_child(spec: dict) -> None:
    """Read the files, build the tutorial model on the engine's network, run, write the PNG."""
    started = time.perf_counter()
    import torch

    from benchmarks.plain_loop import build_model, engine_equivalent_weights, engine_network, run_style_transfer
    from engine.images import read_image, write_image
    from engine.targets import style_at
    from engine.tensors import to_array, to_tensor

    cpu = torch.device("cpu")
    content = read_image(spec["content"])[..., :3]
    h, w = content.shape[:2]
    content_t = to_tensor(content, cpu)
    style_t = to_tensor(style_at(read_image(spec["style"]), h, w, 1.0), cpu)
    net, content_layers, style_layers = engine_network()
    plain = build_model(net, content_layers, style_layers, style_t, content_t)
    engine_equivalent_weights(plain)
    curve: list[tuple[int, float, float]] = []

    def progress(k: int, now: float) -> None:
        # the objective of the image this evaluation saw (already computed: no extra work)
        value = sum(m.weight * float(m.loss.detach()) for m in plain.content_losses + plain.style_losses)
        curve.append((k, round(now - started, 2), value))

    image, _ = run_style_transfer(plain, content_t, spec["steps"], progress)
    write_image(spec["out"], to_array(image))
    Path(spec["curve"]).write_text(json.dumps(curve))


def score(content: Path, style: Path, images: dict[str, Path]) -> dict[str, dict]:
    """Plain-formulation losses of each written result (content/style from the files, same network)."""
    import torch

    from benchmarks.plain_loop import build_model, engine_equivalent_weights, engine_network, scores
    from engine.images import read_image
    from engine.targets import style_at
    from engine.tensors import to_tensor

    cpu = torch.device("cpu")
    content_a = read_image(content)[..., :3]
    h, w = content_a.shape[:2]
    net, content_layers, style_layers = engine_network()
    plain = build_model(net, content_layers, style_layers, to_tensor(style_at(read_image(style), h, w, 1.0), cpu),
                        to_tensor(content_a, cpu))
    engine_equivalent_weights(plain)
    out = {name: scores(plain, to_tensor(read_image(path)[..., :3], cpu)) for name, path in images.items()}
    out["content_image"] = scores(plain, to_tensor(content_a, cpu))
    return out


def time_to_quality(pairs: list[str], sizes: list[int], steps: int, timeout: float, engine_args: list[str],
                    keep: Path | None, rows: list[dict], save=lambda: None) -> list[dict]:
    """Append one row per pair and size to `rows`, calling `save` after each (long runs keep what they did)."""
    from engine.weights import cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cache = folder / "cache"
        cache.mkdir()
        for item in cache_dir().iterdir():  # the weights only: no cached Grams, no exported ONNX
            if item.name.endswith(".pt") or item.name == "wheels":
                (cache / item.name).symlink_to(item)
        for size in sizes:
            for name in pairs:
                content, style = write_pair(name, size, folder)
                plain_out, engine_out = folder / f"{name}-{size}-plain.png", folder / f"{name}-{size}-engine.png"
                shutil.rmtree(cache / "style-grams", ignore_errors=True)
                shutil.rmtree(cache / "onnx", ignore_errors=True)
                print(f"  {name} {size} px: plain loop ({steps} iterations) beside the engine's defaults ...",
                      flush=True)
                runs = side_by_side({"plain": plain_command(content, style, plain_out, steps),
                                     "engine": engine_command(content, style, engine_out, cache, engine_args)},
                                    timeout)
                plain, engine = runs["plain"], runs["engine"]
                curve = plain_out.with_suffix(".curve.json")
                if curve.is_file():
                    plain["curve"] = json.loads(curve.read_text())
                try:
                    engine["summary"] = json.loads(engine.pop("stdout").strip().splitlines()[-1])
                except (KeyError, ValueError, IndexError):
                    pass
                for label, res in (("plain", plain), ("engine", engine)):
                    print(f"    {label}: {res.get('wall_s', '-')} s (load {res['load_before']}) {res.get('error', '')}",
                          flush=True)
                plain.pop("stdout", None)
                row = {"pair": name, "size": size, "plain": plain, "engine": engine}
                done = {k: p for k, p in (("plain", plain_out), ("engine", engine_out)) if p.is_file()}
                if done:
                    row["quality"] = score(content, style, done)
                _summarise(row)
                rows.append(row)
                save()
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    for path in done.values():
                        shutil.copy(path, keep / path.name)
    return rows


def _summarise(row: dict) -> None:
    q = row.get("quality", {})
    if "plain" not in q or "engine" not in q or "wall_s" not in row["plain"] or "wall_s" not in row["engine"]:
        return
    row["engine_reaches_plain_quality"] = q["engine"]["total"] <= q["plain"]["total"]
    row["time_ratio"] = row["engine"]["wall_s"] / row["plain"]["wall_s"]
    # when did the plain loop's own objective first reach the engine's final objective?
    reached = next((t for k, t, v in row["plain"].get("curve", []) if v <= q["engine"]["total"]), None)
    row["plain_seconds_to_engine_quality"] = reached


def print_tables(report: dict) -> None:
    if report.get("throughput"):
        print(f"\n{'size':>5} {'plain it/min':>12} {'engine it/min':>13} {'ratio':>6}")
        for row in report["throughput"]:
            b = row["best_it_per_min"]
            ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
            print(f"{row['size']:>5} {b['plain'] or float('nan'):12.1f} {b['engine'] or float('nan'):13.1f} {ratio:>6}")
    if report.get("time_to_quality"):
        print(f"\n{'pair':18} {'size':>4} {'plain s':>8} {'engine s':>8} {'ratio':>6} "
              f"{'plain Q':>9} {'engine Q':>9} {'reached':>7}")
        for row in report["time_to_quality"]:
            q = row.get("quality", {})
            print(f"{row['pair']:18} {row['size']:>4} {row['plain'].get('wall_s', float('nan')):8.1f} "
                  f"{row['engine'].get('wall_s', float('nan')):8.1f} {row.get('time_ratio', float('nan')):6.2f} "
                  f"{q.get('plain', {}).get('total', float('nan')):9.4f} "
                  f"{q.get('engine', {}).get('total', float('nan')):9.4f} "
                  f"{str(row.get('engine_reaches_plain_quality', '-')):>7}")
    for key, why in report.get("not_measured", {}).items():
        print(f"{key}: not measured ({why})")


def _write(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child-plain", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="256,512", help="throughput sizes, comma-separated ('' for none)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per throughput run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quality-sizes", default="384", help="time-to-quality sizes ('' for none)")
    p.add_argument("--pairs", default="landscape-strokes,stilllife-mosaic")
    p.add_argument("--plain-steps", type=int, default=PLAIN_STEPS)
    p.add_argument("--engine-args", default="", help="extra `neural-style stylize` flags (default: none)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep-images", type=Path, help="copy the results here")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.child_plain:
        plain_child(json.loads(args.child_plain))
        return 0
    ints = lambda text: [int(t) for t in text.split(",") if t.strip()]  # noqa: E731
    report = {"machine": {"gpu": "not measured: no GPU lent to this task", **machine()}, "load_at_start": _load(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k != "child_plain"},
              "not_measured": {"cuda": "no GPU lent to this task"}}
    sizes, quality_sizes = ints(args.sizes), ints(args.quality_sizes)
    if sizes:
        print("throughput (iterations per minute, best of rounds):", flush=True)
        report["throughput"] = throughput(sizes, args.rounds, args.iterations, args.warmup)
        _write(report, args.json)
    if quality_sizes:
        print("time to quality (whole process):", flush=True)
        report["time_to_quality"] = []
        time_to_quality([n for n in args.pairs.split(",") if n], quality_sizes, args.plain_steps, args.timeout,
                        args.engine_args.split(), args.keep_images, report["time_to_quality"],
                        lambda: _write(report, args.json))
    report["load_at_end"] = _load()
    _write(report, args.json)
    print_tables(report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
