"""Distributed stylization on Ray: throughput with 1 and 2 local nodes, flicker at chunk borders.

    .venv/bin/python -m benchmarks.bench_cluster [--frames 12] [--size 64] [--iterations 20]

Runs one procedurally made shot (a square moving over a gradient) three ways:
one machine in one process (`engine.temporal.stylize_sequence`, the reference),
then `engine.distributed.stylize_sequence` on a local Ray cluster of 1 and of 2
nodes (`ray start --head`, `ray start --address`, 1 CPU each, loopback only).
Prints a table and writes docs/bench/cluster.json: seconds, frames/hour, the
warping error (Lai et al. 2018) at chunk borders and
elsewhere, and the largest difference from the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.distributed import ClusterOptions, plan_chunks
from engine.files import list_frames
from engine.images import read_image, write_image
from engine.options import StyleOptions
from engine.flow import warp
from engine.temporal import Frame, TemporalOptions, frame_motion, stylize_sequence

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
OUT = ROOT / "docs" / "bench" / "cluster.json"


def make_shot(folder: Path, frames: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size * 3 // 4, size
    y, x = np.mgrid[0:height, 0:width] / float(width)
    side = size // 4
    for i in range(frames):
        image = np.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x], axis=2).astype(np.float32)
        left = (i * (width - side)) // max(frames - 1, 1)
        image[height // 3 : height // 3 + side, left : left + side] = (0.9, 0.8, 0.2)
        write_image(folder / f"frame_{i + 1:04d}.png", image)
    return list_frames(folder)


def flicker_by_transition(content: list[np.ndarray], output: list[np.ndarray], temporal) -> list[float]:
    """Warping error (Lai et al. 2018) of each transition i-1 -> i: mean squared RGB difference between output i
    and output i-1 warped along the content's optical flow, over the pixels the trust mask keeps."""
    values = []
    for i in range(1, len(output)):
        motion = frame_motion(Frame(content[i - 1]), Frame(content[i]), temporal)
        kept = motion.mask > 0.5
        warped = warp(output[i - 1][..., :3], motion.to_prev)
        values.append(float(((output[i][..., :3] - warped) ** 2).sum(axis=2)[kept].mean()))
    return values


class LocalCluster:
    """`ray start` head plus `nodes - 1` more nodes on this machine, 1 CPU each."""

    def __init__(self, nodes: int):
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=200000000"]
        subprocess.run([RAY, "start", "--head", f"--port={self.port}", "--include-dashboard=false",
                        f"--temp-dir={self.temp}", "--disable-usage-stats", *common],
                       env=self.env, check=True, capture_output=True)
        self.workers = [
            subprocess.Popen([RAY, "start", f"--address={self.address}", "--block", *common], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for _ in range(nodes - 1)
        ]
        time.sleep(10 * (nodes - 1))

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
        subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def run_distributed(nodes: int, frames, styles, options, temporal, out: Path, chunk: int, overlap: int) -> dict:
    cluster = LocalCluster(nodes)
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray

        from engine import distributed

        result = distributed.stylize_sequence(
            frames, styles, options, temporal, out, ClusterOptions(cluster.address, chunk, overlap),
        )
        ray.shutdown()
    finally:
        cluster.close()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
    return {"seconds": result.seconds, "nodes": result.nodes, "failed": result.failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--weights", default="packaged")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    frames = make_shot(work / "shot", args.frames, args.size)
    content = [read_image(p) for p in frames]
    styles = [read_image(ROOT / "engine" / "samples" / "style.png")]
    options = StyleOptions(weights=args.weights, iterations=args.iterations, size=args.size, seed=1, scales=1)
    temporal = TemporalOptions(flow="opencv")
    borders = {c.start for c in plan_chunks(len(frames), args.chunk, args.overlap)[1:]}

    rows = {}
    start = time.perf_counter()
    stylize_sequence(frames, styles, options, temporal, work / "single")
    rows["one process"] = {"seconds": time.perf_counter() - start, "nodes": 1}
    reference = [read_image(p) for p in list_frames(work / "single")]
    for nodes in (1, 2):
        name = f"Ray, {nodes} node{'s' * (nodes > 1)}"
        rows[name] = run_distributed(nodes, frames, styles, options, temporal, work / name.replace(" ", "_"),
                                     args.chunk, args.overlap)
        outputs = [read_image(p) for p in list_frames(work / name.replace(" ", "_"))]
        rows[name]["max_diff_vs_one_process"] = float(max(np.abs(a - b).max() for a, b in zip(outputs, reference)))
        rows[name]["outputs"] = outputs
    rows["one process"]["outputs"] = reference

    print(f"{'run':<16}{'nodes':>6}{'seconds':>9}{'frames/h':>10}{'warp err@border':>16}{'warp err@other':>15}{'max diff':>10}")
    for name, row in rows.items():
        per = flicker_by_transition(content, row.pop("outputs"), temporal)
        row["warping_error_at_borders"] = float(np.mean([v for i, v in enumerate(per, 1) if i in borders]))
        row["warping_error_elsewhere"] = float(np.mean([v for i, v in enumerate(per, 1) if i not in borders]))
        row["frames_per_hour"] = args.frames * 3600 / row["seconds"]
        print(f"{name:<16}{row['nodes']:>6}{row['seconds']:>9.1f}{row['frames_per_hour']:>10.0f}"
              f"{row['warping_error_at_borders']:>16.4f}{row['warping_error_elsewhere']:>15.4f}"
              f"{row.get('max_diff_vs_one_process', 0.0):>10.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg()},
        "settings": vars(args), "chunk_borders": sorted(borders), "runs": rows,
    }, indent=1) + "\n")
    print(f"wrote {OUT}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
