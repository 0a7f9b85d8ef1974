"""Issue 24: how long until the picture is good, against the plain PyTorch loop, on held-out pairs.

    python -m benchmarks.time_to_quality [--pairs forest-strokes,city-mosaic,hopper-points] [--size 256]
                                         [--rounds 1] [--json docs/bench/time_to_quality.json]

Per pair (benchmarks/held_out.py: photographs from installed packages, procedural
paintings; none used by the tests or tuned on) three whole processes run one
after the other, their order rotating each round so none always meets the same
load:

- `plain`: the PyTorch tutorial's loop (benchmarks/plain_loop.py) for 300 iterations;
- `default`: `engine.stylize` with its default options, the convergence stop on;
- `no-stop`: the same with `stop_change` 0, i.e. every one of the default 200 iterations;
- `default-fp32`: the default in fp32, which is what `auto` precision picks on a CPU without bf16 arithmetic
  (on one with it, `default` runs in bf16: engine.tensors.resolve_precision).

Each process reads the PNG files, builds its network from the same packaged
VGG-16 weights and writes an 8-bit PNG; the engine starts from a cache holding
only the weights (no exported ONNX, no cached Grams), so first-run costs are in
its time.  Wall time is the process from start to exit; CPU time (user + system,
from `os.wait4`) is the load-independent figure on a shared machine.  The load
average is recorded before and after each run.  Every PNG is scored by the same
judge (benchmarks/judge.py: packaged VGG-16 content and style distances and their
objective, lower is better).  Each run also records its objective after every
iteration, so the table says when the plain loop first reached the default's
final quality and when the no-stop run reached the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import child_env, load_average, machine, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path("docs/bench/time_to_quality.json")
PLAIN_STEPS = 300
RUNS = ("plain", "default", "no-stop", "default-fp32")
TARGET_RATIO = 0.5


def timed_process(cmd: list[str], timeout: float) -> dict:
    """Run `cmd` to its exit: wall seconds, CPU seconds (user + system of the process and its threads), the load
    average before and after, and the last stdout line; an error line when it failed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        load = load_average()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=child_env(), cwd=ROOT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        result = {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                  "load_before": load, "load_after": load_average()}
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode:
            tail = err.read().strip().splitlines()
            result["error"] = tail[-1] if tail else f"exit status {proc.returncode}"
        elif lines:
            result["summary"] = json.loads(lines[-1])
        return result


def child(spec: dict) -> dict:
    """One run in this (fresh) process: read the pair, optimise, write the PNG; returns its curve and counts."""
    started = time.perf_counter()
    from engine.images import read_image, write_image

    content, style = read_image(spec["content"])[..., :3], read_image(spec["style"])[..., :3]
    curve: list[tuple[int, float, float]] = []  # (iteration, seconds since start, content + style objective)
    if spec["run"] == "plain":
        import torch

        from benchmarks.plain_loop import build_model, engine_equivalent_weights, engine_network, run_style_transfer
        from engine.targets import style_at
        from engine.tensors import to_array, to_tensor

        cpu = torch.device("cpu")
        content_t = to_tensor(content, cpu)
        net, content_layers, style_layers = engine_network()
        plain = build_model(net, content_layers, style_layers, to_tensor(style_at(style, *content.shape[:2], 1.0), cpu),
                            content_t)
        engine_equivalent_weights(plain)

        def progress(k: int, now: float) -> None:  # the objective of the image this evaluation saw
            value = sum(m.weight * float(m.loss.detach()) for m in plain.content_losses + plain.style_losses)
            curve.append((k, round(now - started, 2), value))

        image, ran = run_style_transfer(plain, content_t, spec["steps"], progress)
        write_image(spec["out"], to_array(image))
        return {"iterations": ran, "saved": 0, "curve": curve}
    from engine.options import StyleOptions
    from engine.pipeline import stylize

    options = StyleOptions(cache_dir=spec["cache"])
    if spec["run"] == "no-stop":
        options = options.replace(stop_change=0.0)
    elif spec["run"] == "default-fp32":
        options = options.replace(precision="fp32")
    last = []

    def report(p) -> None:
        last[:] = [p]
        curve.append((p.ran, round(time.perf_counter() - started, 2), p.losses["content"] + p.losses["style"]))

    write_image(spec["out"], stylize(content, [style], options, progress=report))
    return {"iterations": last[-1].ran, "saved": last[-1].saved, "curve": curve}


def child_command(spec: dict) -> list[str]:
    return [sys.executable, "-m", "benchmarks.time_to_quality", "--child", json.dumps(spec)]


def measure_pair(name: str, size: int, rounds: int, steps: int, timeout: float, folder: Path,
                 keep: Path | None) -> dict:
    from benchmarks.held_out import pair
    from benchmarks.judge import Judge
    from engine.images import read_image, write_image
    from engine.weights import cache_dir

    content, style = pair(name, size)
    paths = {"content": folder / f"{name}-content.png", "style": folder / f"{name}-style.png"}
    write_image(paths["content"], content)
    write_image(paths["style"], style)
    content, style = read_image(paths["content"])[..., :3], read_image(paths["style"])[..., :3]
    judge = Judge(content, style)
    row = {"pair": name, "height": content.shape[0], "width": content.shape[1],
           "content_image": judge(content), "runs": {run: [] for run in RUNS}}
    for r in range(rounds):
        order = RUNS[r % len(RUNS):] + RUNS[:r % len(RUNS)]
        for run in order:
            cache = folder / f"cache-{name}-{run}-{r}"  # the weights only: every engine run pays the ONNX export and Grams
            cache.mkdir()
            for item in cache_dir().iterdir():
                if item.name.endswith(".pt") or item.name == "wheels":
                    (cache / item.name).symlink_to(item)
            out = folder / f"{name}-{run}-{r}.png"
            spec = {"run": run, **{k: str(v) for k, v in paths.items()}, "out": str(out), "steps": steps,
                    "cache": str(cache)}
            print(f"  {name} round {r + 1}: {run} ...", end=" ", flush=True)
            result = timed_process(child_command(spec), timeout)
            if "summary" in result:
                result.update(result.pop("summary"))
                result["judge"] = judge(read_image(out)[..., :3])
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    write_image(keep / out.name, read_image(out))
            print(f"{result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU, load {result['load_before']}"
                  f"{', ' + result['error'] if 'error' in result else ''}", flush=True)
            row["runs"][run].append(result)
    summarise(row)
    return row


def summarise(row: dict) -> None:
    """Per pair: the runs' medians over rounds, the default's ratios to the plain loop and whether it met the
    target (the plain loop's quality or better in at most half its wall time)."""
    def median(run: str, key: str):
        values = sorted(r[key] for r in row["runs"][run] if key in r)
        return values[len(values) // 2] if values else None

    def objective(run: str):
        values = sorted(r["judge"]["objective"] for r in row["runs"][run] if "judge" in r)
        return values[len(values) // 2] if values else None

    row["median"] = {run: {"wall_s": median(run, "wall_s"), "cpu_s": median(run, "cpu_s"),
                           "iterations": median(run, "iterations"), "objective": objective(run)} for run in RUNS}
    m = row["median"]
    if not all(m[run]["wall_s"] and m[run]["objective"] for run in ("plain", "default")):
        return
    row["wall_ratio"] = m["default"]["wall_s"] / m["plain"]["wall_s"]
    row["cpu_ratio"] = m["default"]["cpu_s"] / m["plain"]["cpu_s"]
    row["objective_vs_plain"] = m["default"]["objective"] / m["plain"]["objective"] - 1
    row["target_met"] = row["wall_ratio"] <= TARGET_RATIO and m["default"]["objective"] <= m["plain"]["objective"]
    plain_curve = next((r["curve"] for r in row["runs"]["plain"] if r.get("curve")), [])
    row["plain_reaches_default_quality"] = next(
        ({"iteration": k, "seconds": t} for k, t, v in plain_curve if v <= m["default"]["objective"]), None)
    # The plain loop's objective after as many seconds as the whole default process took (its curve's clock starts
    # after its imports, so this favours the plain loop slightly): what a user stopping it then would have.
    row["plain_at_default_wall"] = next(
        (v for k, t, v in reversed(plain_curve) if t <= m["default"]["wall_s"]), None)
    nostop_curve = next((r["curve"] for r in row["runs"]["no-stop"] if r.get("curve")), [])
    row["no_stop_reaches_plain_quality"] = next(
        ({"iteration": k, "seconds": t} for k, t, v in nostop_curve if v <= m["plain"]["objective"]), None)


def print_table(report: dict) -> None:
    print(f"\n{'pair':15} {'run':12} {'wall s':>7} {'CPU s':>7} {'iter':>5} {'content':>8} {'style':>8} "
          f"{'objective':>9}")
    for row in report["pairs"]:
        for run in RUNS:
            for r in row["runs"][run]:
                j = r.get("judge", {})
                print(f"{row['pair']:15} {run:12} {r.get('wall_s', float('nan')):7.1f} "
                      f"{r.get('cpu_s', float('nan')):7.1f} "
                      f"{r.get('iterations', '-'):>5} {j.get('content', float('nan')):8.4f} "
                      f"{j.get('style', float('nan')):8.4f} {j.get('objective', float('nan')):9.4f}")
    print(f"\n{'pair':15} {'wall default/plain':>18} {'CPU default/plain':>17} {'objective vs plain':>18} "
          f"{'target':>6} {'plain at default wall':>21}")
    for row in report["pairs"]:
        if "wall_ratio" in row:
            at = row.get("plain_at_default_wall")
            print(f"{row['pair']:15} {row['wall_ratio']:18.2f} {row['cpu_ratio']:17.2f} "
                  f"{100 * row['objective_vs_plain']:+17.1f}% {'met' if row['target_met'] else 'no':>6} "
                  f"{at if at is None else round(at, 4):>21}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.held_out import PAIRS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--size", type=int, default=256, help="longest side of the contents, pixels")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--plain-steps", type=int, default=PLAIN_STEPS)
    p.add_argument("--timeout", type=float, default=7200, help="seconds per run before it is abandoned")
    p.add_argument("--keep-images", type=Path, help="copy the results here")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    pairs = [n for n in args.pairs.split(",") if n]
    unknown = [n for n in pairs if n not in PAIRS]
    if unknown:
        p.error(f"unknown pair {unknown[0]!r}; choose from {', '.join(PAIRS)}")
    import torch

    from engine.tensors import resolve_precision

    report = {"machine": {**machine(), "default_precision": resolve_precision(torch.device("cpu"), "auto")},
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "settings": {"pairs": pairs, "size": args.size, "rounds": args.rounds, "plain_steps": args.plain_steps},
              "target": f"default objective <= plain objective in <= {TARGET_RATIO} x its wall time",
              "pairs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in pairs:
            print(f"{name} at {args.size} px:", flush=True)
            report["pairs"].append(measure_pair(name, args.size, args.rounds, args.plain_steps, args.timeout,
                                                Path(tmp), args.keep_images))
            write_json(report, args.json)
    report["load_at_end"] = load_average()
    write_json(report, args.json)
    print_table(report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
