"""A shot on a real Ray cluster: a head and a second node started on this machine with `ray start`.

The second node is killed while it holds frames in flight; Ray reruns them on
the head, frames already on shared storage are not recomputed, and the result
equals a run on the head alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from addon_support import style  # noqa: F401 - fixture
from engine.distributed import CHUNKS, Chunk, ClusterOptions, fade_weight, plan_chunks
from engine.errors import EngineError
from engine.images import read_image, write_image

RAY = Path(sys.executable).with_name("ray")
CLI = Path(sys.executable).with_name("neural-style")
STYLE = Path(__file__).resolve().parents[1] / "engine" / "samples" / "style.png"


def test_chunks_cover_every_frame_once_with_lead_ins():
    chunks = plan_chunks(10, 4, 2)
    assert [(c.lead, c.start, c.stop) for c in chunks] == [(0, 0, 4), (2, 4, 8), (6, 8, 10)]
    owned = [i for c in chunks for i in range(c.start, c.stop)]
    assert owned == list(range(10))
    assert [(c.lead, c.start, c.stop) for c in plan_chunks(3, 1, 0)] == [(0, 0, 1), (1, 1, 2), (2, 2, 3)]


def test_lead_in_fades_in_over_the_overlap():
    chunk = Chunk(1, 2, 4, 8)
    assert [fade_weight(chunk, i) for i in (2, 3, 4, 7)] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0, 1.0]


@pytest.mark.parametrize("fields", [dict(chunk=0), dict(chunk=4, overlap=4), dict(retries=-1), dict(gpus=-1)])
def test_cluster_options_are_checked(fields):
    with pytest.raises(EngineError):
        ClusterOptions(**fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node on this machine (loopback only), token authentication on."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                    "--disable-usage-stats", *common], env=env, check=True, capture_output=True, timeout=180)
    address = f"127.0.0.1:{port}"
    node = subprocess.Popen([RAY, "start", f"--address={address}", "--block", *common], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_nodes(address, env, 2)
        yield {"address": address, "env": env, "node": node}
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, env: dict, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0]
        if active.count("node_") >= count:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes")


@pytest.fixture(scope="module")
def shot(tmp_path_factory) -> Path:
    """Six frames of a square moving over a gradient, as a renderer would write them."""
    folder = tmp_path_factory.mktemp("shot")
    y, x = np.mgrid[0:24, 0:32] / 32.0
    for i in range(6):
        frame = np.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x], axis=2).astype(np.float32)
        frame[8:16, 3 + 4 * i : 11 + 4 * i] = (0.9, 0.8, 0.2)
        write_image(folder / f"frame_{i + 1:04d}.png", frame)
    return folder


def stylize_sequence(shot: Path, out: Path, address: str, env: dict, **popen) -> subprocess.Popen:
    args = [CLI, "stylize-sequence", str(shot), str(STYLE), "-o", str(out), "--ray", address, "--chunk", "2",
            "--overlap", "1", "--flow", "opencv", "--weights", "random", "--size", "32", "-n", "3", "--seed", "1",
            "--scales", "1", "--quiet"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_the_worker_submits_a_shot_and_reports_each_frame(cluster, shot, tmp_path):
    """What Blender does with a Ray address set: one `stylize_sequence` job, progress per frame as frames arrive."""
    from test_worker import Worker

    style = tmp_path / "style.npy"
    np.save(style, read_image(STYLE)[..., :3])
    (tmp_path / "out").mkdir()
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # the worker inherits the environment, as Blender's would
    worker = Worker()
    try:
        assert worker.next()["event"] == "ready"
        worker.send(cmd="stylize_sequence", id=1, frames=[str(p) for p in sorted(shot.glob("*.png"))],
                    styles=[str(style)], output_dir=str(tmp_path / "out"),
                    options={"weights": "random", "size": 32, "iterations": 2, "scales": 1, "seed": 1},
                    temporal_options={"flow": "opencv"}, cluster={"address": cluster["address"], "chunk": 3, "overlap": 1})
        events = worker.until("done", "error", timeout=400)
        # Fast mode: one task trains the network, the chunks apply it.
        (tmp_path / "fast").mkdir()
        worker.send(cmd="stylize_sequence", id=2, frames=[str(p) for p in sorted(shot.glob("*.png"))],
                    styles=[str(style)], output_dir=str(tmp_path / "fast"),
                    options={"weights": "random", "size": 32, "seed": 1},
                    fast={"steps": 2, "crop": 32, "width": "small", "residual_blocks": 1},
                    temporal_options={"flow": "opencv", "blend": 0.5}, cluster={"address": cluster["address"]})
        fast_events = worker.until("done", "error", timeout=400)
    finally:
        worker.close()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE")
    assert events[-1]["event"] == "done", events[-1]
    frames = [e["frame"] for e in events if e["event"] == "progress"]
    assert frames == sorted(frames) and frames[-1] == events[-2]["frames"] == 7  # 6 frames + 1 lead-in
    assert all(e["kind"] == "frame" for e in events if e["event"] == "progress")
    assert sorted(Path(p).name for p in events[-1]["outputs"]) == [f"frame_{i:04d}.png" for i in range(1, 7)]
    assert fast_events[-1]["event"] == "done", fast_events[-1]
    assert len(fast_events[-1]["outputs"]) == 6
    assert len(list((tmp_path / "fast" / ".model").glob("*.onnx"))) == 1  # trained once, on shared storage


def test_blender_submits_the_shot_to_the_cluster(cluster, style, tmp_path):
    """Stylize Animation with a Ray address: rendered frames go to the cluster, results come back as frames."""
    import addon_support as support
    import bpy

    from neural_style_addon import api, folder_record, image_bridge

    scene = support.fresh_scene()
    scene.cycles.samples = 1
    scene.frame_start, scene.frame_end = 1, 3
    support.plumbing_settings(scene, style)
    cube = bpy.data.objects["Cube"]
    for frame, x in ((1, -1.0), (3, 1.0)):
        cube.location.x = x
        cube.keyframe_insert("location", index=0, frame=frame)
    out = tmp_path / "frames"
    previous = os.environ.pop("RAY_AUTH_MODE", None)  # as a user's Blender: the engine finds the token itself
    try:
        paths = api.stylize_animation(out_dir=str(out), scene=scene, ray_address=cluster["address"])
    finally:
        if previous is not None:
            os.environ["RAY_AUTH_MODE"] = previous
    assert [Path(p).name for p in paths] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    first, last = (image_bridge.load_image_file(p) for p in (paths[0], paths[2]))
    assert first.shape == (24, 32, 4) and np.abs(first - last).max() > 0.05
    assert not (out / ".shot").exists()
    assert sorted(folder_record.load(str(out))) == [1, 2, 3]


def gradient_content(tmp_path) -> np.ndarray:
    y, x = np.mgrid[0:96, 0:128] / 128.0
    content = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.7 - 0.4 * x], axis=2).astype(np.float32)
    write_image(tmp_path / "content.png", content)
    return content


def here_and_on_the_cluster(cluster, tmp_path, flags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`stylize` of tmp_path/content.png in 64 px tiles on this machine and with `--ray`; both results."""
    common = [str(tmp_path / "content.png"), str(STYLE), *flags, "--tile-size", "64", "--scales", "1",
              "--style-weight", "100", "--seed", "1", "--quiet"]  # the packaged VGG-16: a visible change
    env = {**cluster["env"], "NEURAL_STYLE_TARGETS": "torch"}  # the nodes compute content targets with torch too
    here = subprocess.run([CLI, "stylize", *common, "-o", str(tmp_path / "here.png")], env=env,
                          capture_output=True, text=True, timeout=400)
    assert here.returncode == 0, here.stderr
    spread = subprocess.run([CLI, "stylize", *common, "-o", str(tmp_path / "ray.png"), "--ray", cluster["address"]],
                            env=env, capture_output=True, text=True, timeout=400)
    assert spread.returncode == 0, spread.stderr
    a, b = read_image(tmp_path / "here.png"), read_image(tmp_path / "ray.png")
    assert a.shape == b.shape == (96, 128, 3)
    assert np.abs(a - b).max() <= 2 / 255  # the same tiles, blended the same way (float rounding across processes)
    return a, b


def test_one_large_image_has_its_tiles_optimised_across_the_cluster(cluster, tmp_path):
    """`stylize --ray`: each pass's tiles run as Ray tasks; the picture equals the one-machine tiled run."""
    content = gradient_content(tmp_path)
    _, spread = here_and_on_the_cluster(cluster, tmp_path, ["-n", "4"])
    assert np.abs(spread - content).mean() > 0.005  # and it did stylize (0.009 measured; 2 random-weight steps: 0.001)


def test_regions_of_a_large_image_travel_with_its_tiles(cluster, tmp_path):
    """`stylize --mask ... --ray`: each tile carries its cut of the masks; the picture equals the one-machine run."""
    content = gradient_content(tmp_path)
    left = np.zeros((96, 128, 3), np.float32)
    left[:, :64] = 1
    write_image(tmp_path / "left.png", left)
    _, spread = here_and_on_the_cluster(cluster, tmp_path, ["--mask", str(tmp_path / "left.png"), "-n", "3"])
    np.testing.assert_allclose(spread[:, 72:], content[:, 72:], atol=1 / 255 + 1e-6)  # the unmasked half is kept
    assert np.abs(spread[:, :56] - content[:, :56]).mean() > 0.003  # the masked half is stylized (0.0049)


def test_a_node_dies_mid_shot_and_the_shot_completes(cluster, shot, tmp_path):
    out = tmp_path / "distributed"
    killed = threading.Event()

    def kill_second_node_when_work_lands() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed.is_set():
            if list((out / CHUNKS).glob("*/*.npy")):
                os.killpg(cluster["node"].pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_second_node_when_work_lands, daemon=True)
    watcher.start()
    run = stylize_sequence(shot, out, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    assert killed.is_set(), "the second node was never killed: the test did not test a failure"
    frames = sorted(p.name for p in out.glob("*.png"))
    assert frames == [f"frame_{i:04d}.png" for i in range(1, 7)]
    assert not (out / CHUNKS).exists()  # intermediate frames are cleared once the shot is complete

    # The same shot on the head alone (the second node is gone): identical frames.
    single = tmp_path / "single"
    run = stylize_sequence(shot, single, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    for name in frames:
        np.testing.assert_array_equal(read_image(out / name), read_image(single / name))

    # A rerun with the same settings finds every frame done and rewrites nothing.
    stamps = {name: (out / name).stat().st_mtime_ns for name in frames}
    run = stylize_sequence(shot, out, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    assert {name: (out / name).stat().st_mtime_ns for name in frames} == stamps


def test_a_bad_address_is_one_sentence(shot, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    run = stylize_sequence(shot, tmp_path / "out", f"127.0.0.1:{_free_port()}", env)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("neural-style: error: cannot reach the Ray cluster")
