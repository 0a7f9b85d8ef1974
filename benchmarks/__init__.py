"""Development benchmarks of the engine: speed, memory, flicker; each prints a table and writes JSON.

Run from the repository root, e.g. `python -m benchmarks.bench --help`
(docs/benchmarks.md).  Not part of the engine package or the Blender extension.
What several benchmarks share lives here: measurements in fresh child
processes, the machine description, timing loops and the JSON output.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository root on PYTHONPATH, so a child imports `benchmarks`."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_child(module: str, spec: dict, timeout: float) -> dict:
    """Run `module.child_main()` in a fresh interpreter with `spec` as its JSON argument, so its peak
    memory and warm-up belong to that measurement alone; returns the JSON of its last stdout line,
    or {"error": ...} with the reason it gave none."""
    cmd = [sys.executable, "-c", f"from {module} import child_main; child_main()", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": tail if proc.returncode >= 0 else f"killed by signal {-proc.returncode} ({tail})"}
    return json.loads(lines[-1])


def load_average() -> float:
    """The 1-minute load average, rounded: said beside every timing taken on a shared machine."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    """What the numbers were measured on: CPU, threads, versions, GPU, and the load when they started."""
    import torch

    from engine.tensors import cpu_name, describe_device, pick_device

    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp spins)"),
            "load_average_at_start": os.getloadavg()[0]}
    accelerator = pick_device("auto")
    if accelerator.type != "cpu":
        info["gpu"] = describe_device(accelerator)
    return info


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls of `fn`, after one untimed warm-up call (kernel set-up, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def write_json(report: dict, path: str | Path) -> Path:
    """Write `report` as indented JSON, replacing `path` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return path
