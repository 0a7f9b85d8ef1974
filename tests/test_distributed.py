"""A shot on a real Ray cluster: a head and a second node started on this machine with `ray start`.

The second node is killed while it holds frames in flight; Ray reruns them on
the head, frames already on shared storage are not recomputed, and the result
equals a run on the head alone.
"""

from __future__ import annotations

import json
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
SAMPLES = Path(__file__).resolve().parents[1] / "engine" / "samples"
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


ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "distributed.md"


def documented(machine: str) -> list[str]:
    """The command lines of docs/distributed.md's bash block whose first comment starts with `# on <machine>`."""
    blocks = [block.split("```")[0] for block in DOCS.read_text().split("```bash\n")[1:]]
    for block in blocks:
        lines = block.strip().splitlines()
        if lines and lines[0].startswith(f"# on {machine}"):
            return [line for line in lines if line.strip() and not line.startswith("#")]
    raise AssertionError(f"docs/distributed.md has no bash block for '# on {machine}'")


class Machine:
    """One machine of the documented set-up: a home folder (the token lives there) and Ray's temp folder of its
    own, the venv's commands on PATH.  `run` runs documented lines as written, placeholders filled."""

    def __init__(self, root: Path, name: str, fill: dict[str, str]):
        self.home = root / name
        self.home.mkdir()
        temp = Path(tempfile.mkdtemp(prefix=f"r{name[0]}", dir="/tmp"))  # Ray's socket paths stay under 107 bytes
        self.env = {**os.environ, "HOME": str(self.home), "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{RAY.parent}{os.pathsep}{os.environ['PATH']}"}
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
            self.env.pop(key, None)  # what a fresh shell has
        self.fill = fill
        self.groups: list[int] = []  # process groups of the Ray processes started here
        self.temp = temp

    def run(self, line: str, timeout: float = 180) -> str:
        for placeholder, value in self.fill.items():
            line = line.replace(placeholder, value)
        done = subprocess.Popen(["bash", "-c", line], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.groups.append(done.pid)
        out, err = done.communicate(timeout=timeout)
        assert done.returncode == 0, f"`{line}` failed (exit {done.returncode}):\n{err[-3000:]}"
        return out

    def signal(self, sig: int) -> None:
        for group in self.groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop this machine's Ray processes, and only them (another cluster may run on this machine)."""
        self.signal(signal.SIGTERM)
        time.sleep(2)
        self.signal(signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a second node on this machine, set up by docs/distributed.md's lines as written: the head
    makes the token and starts; the node gets the token in its own home and joins.  The node's machine is also
    the one that runs the CLI and the worker in these tests."""
    root = tmp_path_factory.mktemp("machines")
    port = str(_free_port())
    fill = {"HEAD": "127.0.0.1", "6379": port}
    head, node = Machine(root, "head", fill), Machine(root, "node", fill)
    try:
        head_lines = documented("the head node")
        token = head.run(head_lines[0]).strip()
        assert len(token) >= 32 and (head.home / ".ray" / "auth_token").read_text().strip() == token
        for line in head_lines[1:]:
            head.run(line)
        node.fill = {**fill, "TOKEN": token}
        for line in documented("every other node"):
            node.run(line)
        address = f"127.0.0.1:{port}"
        _wait_for_nodes(address, node.env, 2)
        yield {"address": address, "env": node.env, "node": node, "head": head, "root": root, "fill": fill,
               "token_file": str(node.home / ".ray" / "auth_token")}
    finally:
        node.stop()
        head.stop()


def _wait_for_nodes(address: str, env: dict, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", f"--address={address}"], env={**env, "RAY_AUTH_MODE": "token"},
                                capture_output=True, text=True)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0]
        if active.count("node_") >= count:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes: {status.stderr[-2000:]}")


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


SQUARE = (3.0, 2.2, 0.8)  # a highlight: sRGB-encoded values above 1 (scene-linear up to about 11)


def square_at(i: int) -> tuple[slice, slice]:
    return slice(8, 16), slice(3 + 4 * i, 11 + 4 * i)


@pytest.fixture(scope="module")
def hdr_shot(tmp_path_factory) -> Path:
    """Six scene-linear EXR frames of a bright square moving over a gradient, and two mask folders, one mask per
    frame: `square/` follows the square (a Limit To on a moving object), `floor/` is the bottom strip."""
    folder = tmp_path_factory.mktemp("hdr_shot")
    for name in ("frames", "square", "floor"):
        (folder / name).mkdir()
    y, x = np.mgrid[0:24, 0:32] / 32.0
    for i in range(6):
        frame = np.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x], axis=2).astype(np.float32)
        frame[square_at(i)] = SQUARE
        write_image(folder / "frames" / f"frame_{i + 1:04d}.exr", frame)
        square, floor = np.zeros((24, 32, 3), np.float32), np.zeros((24, 32, 3), np.float32)
        square[square_at(i)] = 1
        floor[19:] = 1
        write_image(folder / "square" / f"mask_{i + 1:04d}.png", square)
        write_image(folder / "floor" / f"mask_{i + 1:04d}.png", floor)
    return folder


def stylize_sequence(shot: Path, out: Path, address: str, env: dict, *extra: str) -> subprocess.Popen:
    """`stylize-sequence` of `shot` (a folder of frames, or an `hdr_shot` with its two regions) on the cluster."""
    if (shot / "frames").is_dir():  # two styles, each limited to its masks; EXR in, EXR out
        extra = (str(SAMPLES / "content.png"), "--mask", str(shot / "square"), "--mask", str(shot / "floor"),
                 "--format", "exr", *extra)
        shot = shot / "frames"
    args = [CLI, "stylize-sequence", str(shot), str(STYLE), *extra, "-o", str(out), "--ray", address, "--chunk", "2",
            "--overlap", "1", "--flow", "opencv", "--weights", "random", "--size", "32", "-n", "3", "--seed", "1",
            "--scales", "1", "--quiet"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_worker_submits_a_shot_and_reports_each_frame(cluster, shot, tmp_path):
    """What Blender does with a Ray address set: one `stylize_sequence` job, progress per frame as frames arrive."""
    from test_worker import Worker

    style = tmp_path / "style.npy"
    np.save(style, read_image(STYLE)[..., :3])
    (tmp_path / "out").mkdir()
    where = {"address": cluster["address"], "token_file": cluster["token_file"]}  # Blender's Ray preferences
    worker = Worker()
    try:
        assert worker.next()["event"] == "ready"
        worker.send(cmd="stylize_sequence", id=1, frames=[str(p) for p in sorted(shot.glob("*.png"))],
                    styles=[str(style)], output_dir=str(tmp_path / "out"),
                    options={"weights": "random", "size": 32, "iterations": 2, "scales": 1, "seed": 1},
                    temporal_options={"flow": "opencv"}, cluster={**where, "chunk": 3, "overlap": 1})
        events = worker.until("done", "error", timeout=400)
        # Fast mode: one task trains the network, the chunks apply it.
        (tmp_path / "fast").mkdir()
        worker.send(cmd="stylize_sequence", id=2, frames=[str(p) for p in sorted(shot.glob("*.png"))],
                    styles=[str(style)], output_dir=str(tmp_path / "fast"),
                    options={"weights": "random", "size": 32, "seed": 1},
                    fast={"steps": 2, "crop": 32, "width": "small", "residual_blocks": 1},
                    temporal_options={"flow": "opencv", "blend": 0.5}, cluster=where)
        fast_events = worker.until("done", "error", timeout=400)
    finally:
        worker.close()
    assert events[-1]["event"] == "done", events[-1]
    frames = [e["frame"] for e in events if e["event"] == "progress"]
    assert frames == sorted(frames) and frames[-1] == events[-2]["frames"] == 7  # 6 frames + 1 lead-in
    assert all(e["kind"] == "frame" for e in events if e["event"] == "progress")
    assert sorted(Path(p).name for p in events[-1]["outputs"]) == [f"frame_{i:04d}.png" for i in range(1, 7)]
    assert fast_events[-1]["event"] == "done", fast_events[-1]
    assert len(fast_events[-1]["outputs"]) == 6
    assert len(list((tmp_path / "fast" / ".model").glob("*.onnx"))) == 1  # trained once, on shared storage


def test_blender_submits_the_shot_to_the_cluster(cluster, style, tmp_path):
    """Stylize Animation with a Ray address and a style limited to the moving cube: rendered frames and their
    Cryptomatte passes go to the cluster, results come back as frames, everything but the cube as rendered."""
    from test_addon_regions import assert_only_the_cube_is_stylized, limited_scene

    from neural_style_addon import api, folder_record, image_bridge

    scene, cube = limited_scene(style)
    scene.cycles.samples = 1
    scene.frame_start, scene.frame_end = 1, 3
    for frame, x in ((1, -1.0), (3, 1.0)):
        cube.location.x = x
        cube.keyframe_insert("location", index=0, frame=frame)
    out = tmp_path / "frames"
    paths = api.stylize_animation(out_dir=str(out), scene=scene, ray_address=cluster["address"],
                                  ray_token_file=cluster["token_file"])
    assert [Path(p).name for p in paths] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert not (out / ".shot").exists()
    assert sorted(folder_record.load(str(out))) == [1, 2, 3]
    assert not scene.view_layers[0].use_pass_cryptomatte_object  # restored
    for frame, path in zip((1, 3), (paths[0], paths[2])):
        assert image_bridge.load_image_file(path).shape == (24, 32, 4)
        assert_only_the_cube_is_stylized(scene, frame, path, tmp_path)


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


def test_a_node_dies_mid_shot_and_the_shot_completes(cluster, hdr_shot, tmp_path):
    """An HDR shot with two regions (a style on the moving square, another on the floor, the rest kept); the
    second node is killed as soon as the first frame lands."""
    shot = hdr_shot
    out = tmp_path / "distributed"
    killed = threading.Event()

    def kill_second_node_when_work_lands() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed.is_set():
            if list((out / CHUNKS).glob("*/*.npy")):
                cluster["node"].signal(signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_second_node_when_work_lands, daemon=True)
    watcher.start()
    run = stylize_sequence(shot, out, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    assert killed.is_set(), "the second node was never killed: the test did not test a failure"
    frames = sorted(p.name for p in out.glob("*.exr"))
    assert frames == [f"frame_{i:04d}.exr" for i in range(1, 7)]
    assert not (out / CHUNKS).exists()  # intermediate frames are cleared once the shot is complete
    for i, name in enumerate(frames):
        content, result = read_image(shot / "frames" / name, hdr=True), read_image(out / name, hdr=True)
        kept = np.ones((24, 32), bool)
        kept[7:17, 2 + 4 * i: 12 + 4 * i] = kept[18:] = False  # the two regions, and a pixel around them
        np.testing.assert_allclose(result[kept], content[kept], atol=1e-4)  # the rest stays as it was
        assert result[square_at(i)].max() > 2.0  # the highlight keeps its range (3.0 in, clipped at 1 before)
        assert np.abs(result[square_at(i)] - content[square_at(i)]).mean() > 0.01  # ... and is stylized
        assert np.abs(result[20:] - content[20:]).mean() > 1e-3  # the floor too (0.002 with 3 random-weight steps)

    # The same shot on the head alone (the second node is gone): identical frames.
    single = tmp_path / "single"
    run = stylize_sequence(shot, single, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    for name in frames:
        np.testing.assert_array_equal(read_image(out / name, hdr=True), read_image(single / name, hdr=True))

    # A rerun with the same settings finds every frame done and rewrites nothing.
    stamps = {name: (out / name).stat().st_mtime_ns for name in frames}
    run = stylize_sequence(shot, out, cluster["address"], cluster["env"])
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    assert {name: (out / name).stat().st_mtime_ns for name in frames} == stamps


def test_the_documented_run_stylizes_a_shot(cluster, shot, tmp_path):
    """docs/distributed.md's run line, as written (its placeholders filled; the engine's default settings and
    weights), on the node that joined: a two-frame shot, so it takes seconds."""
    (line,) = documented("the machine that runs Blender")
    frames, out = tmp_path / "frames", tmp_path / "stylized"
    frames.mkdir()
    for name in ("frame_0001.png", "frame_0002.png"):
        shutil.copy(shot / name, frames / name)
    machine = cluster["node"]
    fill = machine.fill
    machine.fill = {**fill, "/shared/frames": str(frames), "style.png": str(STYLE), "/shared/stylized": str(out)}
    try:
        machine.run(line, timeout=600)
    finally:
        machine.fill = fill
    assert sorted(p.name for p in out.glob("*.png")) == ["frame_0001.png", "frame_0002.png"]


def one_sentence(address: str, env: dict, out: Path, *flags: str) -> str:
    """Run stylize-sequence against `address`; it must fail within 30 s with one line and leave `out` alone."""
    started = time.monotonic()
    run = subprocess.run([CLI, "stylize-sequence", str(STYLE.parent), str(STYLE), "-o", str(out), "--ray", address,
                          "--weights", "random", *flags], env=env, capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 30
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr  # no Ray warnings either
    assert not out.exists()  # nothing was written
    return lines[0].removeprefix("neural-style: error: ")


@pytest.fixture()
def stranger(tmp_path) -> dict:
    """A machine that never got the cluster's token (an empty home, nothing in the environment)."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return env


@pytest.fixture()
def web_server():
    """What answers on Ray's dashboard port: an HTTP server."""
    import http.server

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_addresses_that_are_wrong_are_one_sentence_each(stranger, web_server, tmp_path):
    out = tmp_path / "out"
    closed = f"127.0.0.1:{_free_port()}"
    assert one_sentence(closed, stranger, out).startswith(f"nothing listens at {closed} (connection refused)")
    answer = one_sentence(web_server, stranger, out)
    assert answer.startswith(f"{web_server} is a web server (it answered ") and "8265" in answer
    assert one_sentence("no-such-host.invalid:6379", stranger, out).startswith(
        "cannot find the Ray head node's host 'no-such-host.invalid'")
    assert one_sentence("head-without-port", stranger, out).startswith("a Ray address is HOST:PORT")
    with pytest.raises(EngineError, match="nothing listens"):  # the API says the same
        from engine.cluster_check import check

        check(closed)


def test_a_missing_or_wrong_token_is_one_sentence(cluster, stranger, tmp_path):
    out = tmp_path / "out"
    address = cluster["address"]
    assert one_sentence(address, stranger, out).startswith(
        f"the Ray cluster at {address} wants an authentication token and this machine has none")
    other = tmp_path / "other_token"
    other.write_text("0" * 64)
    assert one_sentence(address, stranger, out, "--ray-token", str(other)) == (
        f"the Ray cluster at {address} refused the token from {other}: it is not the head node's token; copy the "
        "one `ray get-auth-token` prints on the head node")
    assert one_sentence(address, stranger, out, "--ray-token", str(tmp_path / "nowhere")).startswith(
        f"the Ray token file {tmp_path / 'nowhere'} does not exist")
    assert one_sentence(address, {**stranger, "RAY_AUTH_MODE": "token"}, out).startswith(
        "RAY_AUTH_MODE is 'token' but this machine has no Ray token")


METADATA = """
import json, sys
from ray._common.usage import usage_constants
from ray._private import ray_constants
from ray._raylet import GcsClient

client = GcsClient(address=sys.argv[1])
key, space = usage_constants.CLUSTER_METADATA_KEY, ray_constants.KV_NAMESPACE_CLUSTER
print(client.internal_kv_get(key, namespace=space).decode())
client.internal_kv_put(key, sys.argv[2].encode(), True, namespace=space)
"""


def test_a_cluster_of_another_ray_version_is_one_sentence(cluster, tmp_path):
    """The cluster's metadata says Ray 2.59.0, as a head started with that version would: Ray's own driver
    refuses it too (ray.init's version check reads the same metadata)."""
    env = {**cluster["env"], "RAY_AUTH_MODE": "token"}

    def metadata(value: str) -> dict:
        done = subprocess.run([sys.executable, "-c", METADATA, cluster["address"], value], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    real = metadata("{}")
    metadata(json.dumps({**real, "ray_version": "2.59.0"}))
    try:
        answer = one_sentence(cluster["address"], cluster["env"], tmp_path / "out")
    finally:
        metadata(json.dumps(real))
    assert answer.startswith(f"the Ray cluster at {cluster['address']} runs Ray 2.59.0 on Python "
                             f"{real['python_version']}, this machine Ray {real['ray_version']}")


def test_a_machine_outside_the_cluster_is_told_to_join(monkeypatch):
    """Ray runs a driver only on a node of the cluster (one machine here is always one: the check's verdict)."""
    from engine import cluster_check

    found = {"ray": cluster_check._versions()[0], "python": cluster_check._versions()[1], "member": False}
    monkeypatch.setattr(cluster_check, "_check_answers", lambda *args: None)
    monkeypatch.setattr(cluster_check.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, json.dumps(found) + "\n", ""))
    with pytest.raises(EngineError, match=r"^this machine is not a node of the Ray cluster at head:6379, .* join it "
                                          r"first with `ray start --address=head:6379`"):
        cluster_check.check("head:6379")


def test_blender_reports_the_same_sentence(cluster, style, tmp_path):
    """Stylize Animation with a wrong token file: the report is the engine's sentence, and nothing is made."""
    import addon_support as support

    from neural_style_addon import api
    from neural_style_addon.errors import StyleError

    scene = support.fresh_scene()
    scene.frame_start = scene.frame_end = 1
    support.plumbing_settings(scene, style)
    other = tmp_path / "other_token"
    other.write_text("1" * 64)
    with pytest.raises(StyleError) as error:
        api.stylize_animation(out_dir=str(tmp_path / "frames"), scene=scene, ray_address=cluster["address"],
                              ray_token_file=str(other))
    assert not (tmp_path / "frames" / ".shot").exists()  # refused before any frame was rendered
    assert str(error.value) == (f"the Ray cluster at {cluster['address']} refused the token from {other}: it is not "
                                "the head node's token; copy the one `ray get-auth-token` prints on the head node")
