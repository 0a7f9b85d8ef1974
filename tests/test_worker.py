"""The worker process and its line protocol (docs/worker-protocol.md), spoken over real pipes.

Jobs here use `weights: "random"`: these tests check the plumbing (events,
files, cancellation), not the look of the result.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUMBING = {"weights": "random", "model": "vgg16", "size": 32}


class Worker:
    """A worker subprocess with its events collected on a thread."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NEURAL_STYLE_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, text=True, bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        self.raw_lines: list[str] = []
        self.log: list[str] = []  # stderr, read on a thread so the pipe never fills
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def send(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout=60):
        return self.events.get(timeout=timeout)

    def until(self, *kinds, timeout=60):
        """Events up to and including the first one of `kinds`."""
        seen = []
        while True:
            event = self.next(timeout)
            seen.append(event)
            if event["event"] in kinds:
                return seen

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    assert w.next()["event"] == "ready"
    yield w
    w.close()


def write(path: Path, array: np.ndarray) -> str:
    np.save(path, array.astype(np.float32))
    return str(path)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    content = rng.random((24, 32, 4))
    content[..., 3] = np.linspace(0, 1, 32)[None, :]  # a gradient alpha the engine must pass through
    return {
        "content": write(tmp_path / "content.npy", content),
        "styles": [write(tmp_path / "style.npy", rng.random((32, 32, 3)))],
        "output": str(tmp_path / "out.npy"),
        "preview": str(tmp_path / "preview.npy"),
        "alpha": content[..., 3].astype(np.float32),
    }


def stylize(worker, images, job_id, iterations, **extra):
    worker.send(cmd="stylize", id=job_id, content=images["content"], styles=images["styles"],
                options={**PLUMBING, "iterations": iterations}, output=images["output"], **extra)


def test_ping_answers_with_pong(worker):
    worker.send(cmd="ping", id=7)
    assert worker.next() == {"event": "pong", "id": 7}


def test_stylize_reports_progress_previews_and_writes_the_output(worker, images):
    stylize(worker, images, "job-1", 4, preview_every=2, preview=images["preview"])
    events = worker.until("done", "error")
    assert events[-1]["event"] == "done", events[-1]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["iteration"] for e in progress] == [1, 2, 3, 4]
    assert all(e["total"] == 4 and e["id"] == "job-1" and "total" in e["losses"] for e in progress)
    # Structured fields, so hosts never parse `stage` (a label for display only).
    assert all(e["kind"] == "optimize" and e["scales"] == 1 and (e["height"], e["width"]) == (24, 32) for e in progress)
    assert all(e["tile"] == e["tiles"] == e["frame"] == e["frames"] == 0 for e in progress)
    assert all(isinstance(e["stage"], str) and e["elapsed"] >= 0 for e in progress)
    previews = [e for e in events if e["event"] == "preview"]
    assert [e["iteration"] for e in previews] == [2]  # the last iteration is the output, not a preview
    assert np.load(previews[0]["path"]).shape[:2] == (24, 32)
    out = np.load(events[-1]["output"])
    assert out.dtype == np.float32 and out.shape == (24, 32, 4) and events[-1]["shape"] == [24, 32, 4]
    np.testing.assert_allclose(out[..., 3], images["alpha"], atol=1e-6)
    assert not list(Path(images["output"]).parent.glob("*.partial*"))


def test_temporal_field_ties_the_frame_to_the_previous_output(worker, images, tmp_path):
    # Plumbing with random weights: an unchanged frame (zero flow, every pixel trusted) blended fully
    # with the previous output must come back as that output, whatever the optimiser made.
    from engine.images import write_image

    previous = np.random.default_rng(1).random((24, 32, 3)).astype(np.float32)
    previous_output = str(write_image(tmp_path / "frame_0001.png", previous))
    temporal = {"options": {"weight": 20.0, "blend": 1.0}, "previous_output": previous_output, "vectors": None,
                "previous_vectors": None, "previous_content": images["content"]}
    stylize(worker, images, "job-temporal", 2, temporal=temporal)
    events = worker.until("done", "error")
    assert events[-1]["event"] == "done", events[-1]
    out = np.load(events[-1]["output"])
    assert np.abs(out[..., :3] - previous).mean() < 0.01
    np.testing.assert_allclose(out[..., 3], images["alpha"], atol=1e-6)

    stylize(worker, images, "job-temporal-bad", 2, temporal={**temporal, "options": {"blend": 2.0}})
    assert worker.until("done", "error")[-1] == {
        "event": "error", "id": "job-temporal-bad", "message": "temporal blend must be between 0 and 1, got 2.0"}


def test_cancel_stops_a_running_job_and_the_worker_carries_on(worker, images):
    # the convergence stop off: a picture that stops changing would end the job before the cancel arrives
    worker.send(cmd="stylize", id="long", content=images["content"], styles=images["styles"],
                options={**PLUMBING, "iterations": 5000, "stop_change": 0.0}, output=images["output"])
    first = worker.until("progress")[-1]
    assert first["id"] == "long"
    worker.send(cmd="cancel")
    events = worker.until("cancelled", "done", "error")
    assert events[-1] == {"event": "cancelled", "id": "long"}
    assert max(e["iteration"] for e in [first, *events] if e["event"] == "progress") < 5000
    stylize(worker, images, "after", 2)
    assert worker.until("done", "error", "cancelled")[-1]["event"] == "done"


def test_cancel_sent_right_after_a_request_cancels_that_request_only(worker, images):
    stylize(worker, images, "a", 5000)
    worker.send(cmd="cancel")
    stylize(worker, images, "b", 2)
    assert worker.until("cancelled", "done", "error")[-1] == {"event": "cancelled", "id": "a"}
    assert worker.until("cancelled", "done", "error")[-1]["id"] == "b"


@pytest.mark.parametrize(
    "request_fields, message",
    [
        ({"content": "/nonexistent/content.npy"}, "cannot read the content pixels"),
        ({"options": {"model": "resnet"}}, "unknown model 'resnet'"),
        ({"options": {"colour": 1}}, "unknown option(s): colour"),
        ({"styles": []}, "missing styles"),
    ],
)
def test_bad_requests_get_one_clear_error_line(worker, images, request_fields, message):
    request = {"cmd": "stylize", "id": "bad", "content": images["content"], "styles": images["styles"],
               "options": PLUMBING, "output": images["output"], **request_fields}
    worker.send(**request)
    event = worker.until("error", "done")[-1]
    assert event["event"] == "error" and event["id"] == "bad"
    assert message in event["message"] and "\n" not in event["message"]


def test_garbage_and_unknown_commands_are_errors_not_crashes(worker):
    worker.proc.stdin.write("this is not json\n")
    worker.proc.stdin.flush()
    assert "bad request line" in worker.next()["message"]
    worker.send(cmd="dance", id=3)
    assert worker.next() == {"event": "error", "id": 3, "message": "unknown command 'dance'"}
    worker.send(cmd="ping", id=4)
    assert worker.next()["event"] == "pong"


def test_quit_during_a_job_cancels_it_and_exits_cleanly(images):
    w = Worker()
    try:
        assert w.next()["event"] == "ready"
        stylize(w, images, "q", 5000)
        w.until("progress")
        w.send(cmd="quit")
        events = w.until("eof")
        assert {"event": "cancelled", "id": "q"} in events
        assert w.proc.wait(timeout=30) == 0
    finally:
        w.close()


def test_stray_output_goes_to_stderr_not_into_the_protocol():
    code = (
        "import os\n"
        "from engine.worker import Channel, claim_stdout\n"
        "channel = Channel(claim_stdout())\n"
        "print('a stray print')\n"
        "os.write(1, b'a C library writing to fd 1\\n')\n"
        "channel.emit('ready')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"event": "ready"}\n'
    assert "a stray print" in done.stderr and "a C library writing to fd 1" in done.stderr


# ---------------------------------------------------------------------------------------------------------------
# Bad input, class by class: one readable `error` line, before any work, no traceback, nothing written.


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def refused(worker, job_id, request: dict, folder: Path, message: str) -> dict:
    """Send `request`; assert it ends in one clear error containing `message` and changed nothing in `folder`."""
    before = listing(folder)
    worker.send(**request, id=job_id)
    events = worker.until("error", "done", "cancelled")
    error = events[-1]
    assert error["event"] == "error", error
    assert error.get("id") == job_id
    assert message in error["message"], error["message"]
    assert "\n" not in error["message"] and "internal error" not in error["message"]
    assert not [e for e in events if e["event"] in ("progress", "preview")], "the request was refused before any work"
    assert listing(folder) == before
    assert not any("Traceback" in line for line in worker.log), "".join(worker.log)
    return error


def stylize_request(images, **fields) -> dict:
    return {"cmd": "stylize", "content": images["content"], "styles": images["styles"], "options": PLUMBING,
            "output": images["output"], **fields}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"options": {**PLUMBING, "iterations": "10"}}, "iterations must be a whole number"),
        ({"options": {**PLUMBING, "iterations": 2.5}}, "iterations must be a whole number"),
        ({"options": {**PLUMBING, "style_weight": "big"}}, "style_weight must be a number"),
        ({"options": {**PLUMBING, "preserve_colors": 1}}, "preserve_colors must be a true/false value"),
        ({"options": [1, 2]}, "must be a JSON object"),
        ({"styles": "/tmp/style.npy"}, "styles must be a non-empty list"),
        ({"styles": [3]}, "styles[0] must be a non-empty string"),
        ({"content": {"path": "x"}}, "content must be a non-empty string"),
        ({"preview_every": "3"}, "preview_every must be a whole number"),
        ({"preview_every": -1}, "preview_every must be at least 0, got -1"),
        ({"temporal": "yes"}, "temporal must be an object"),
        ({"temporal": {"options": {"blend": "1"}}}, "blend must be a number"),
        ({"temporal": {"previous_outptu": "x.png"}}, "unknown field(s): temporal.previous_outptu"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ({"output": None}, "the request is missing output"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(worker, images, tmp_path, fields, message):
    refused(worker, "types", stylize_request(images, **fields), tmp_path, message)


def test_non_finite_numbers_are_refused(worker, images, tmp_path):
    line = json.dumps({**stylize_request(images), "id": "nan"})
    before = listing(tmp_path)
    worker.proc.stdin.write(line.replace('"size": 32', '"size": 32, "style_weight": NaN') + "\n")
    worker.proc.stdin.flush()
    assert "bad request line" in worker.until("error")[-1]["message"]
    big = line.replace('"size": 32', '"size": 32, "tv_weight": 1e999')  # JSON parses this as infinity
    worker.proc.stdin.write(big + "\n")
    worker.proc.stdin.flush()
    error = worker.until("error", "done")[-1]
    assert error["id"] == "nan" and "tv_weight must be a finite number" in error["message"]
    assert listing(tmp_path) == before


def written(path: Path, data) -> str:
    """`data` (bytes, or an array saved as it is) in a file at `path`."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        np.save(path, data)
    return str(path)


def header_only(path: Path, shape, descr="<f4") -> str:
    """A .npy file whose header declares `shape` but that holds no data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
    return str(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: header_only(d / "huge.npy", (60000, 60000, 3)), "is 60000x60000; the limit is 16384 px per side"),
        (lambda d: header_only(d / "wide.npy", (1, 10**12, 3)), "the limit is"),
        (lambda d: header_only(d / "many.npy", (16000, 16000, 3)), "16000x16000; the limit is"),  # pixel count
        (lambda d: header_only(d / "empty.npy", (0, 32, 3)), "declares an empty image"),
        (lambda d: write(d / "flat.npy", np.zeros((24, 32))), "must be HxWx3 or HxWx4"),
        (lambda d: write(d / "five.npy", np.zeros((24, 32, 5))), "must be HxWx3 or HxWx4"),
        (lambda d: written(d / "ints.npy", np.zeros((4, 4, 3), np.uint8)), "floating point"),
        (lambda d: header_only(d / "short.npy", (24, 32, 3)), "cannot read the content pixels"),
        (lambda d: write(d / "nan.npy", np.full((4, 4, 3), np.nan)), "NaN or infinite"),
        (lambda d: written(d / "text.npy", b"hello"), "cannot read the content pixels"),
    ],
)
def test_bad_pixel_files_are_refused_before_loading(worker, images, tmp_path, make, message):
    content = make(tmp_path)
    refused(worker, "pixels", stylize_request(images, content=content), tmp_path, message)


def test_pickled_objects_are_never_loaded(worker, images, tmp_path):
    np.save(tmp_path / "objects.npy", np.array([[[{"a": 1}] * 3]], dtype=object), allow_pickle=True)
    refused(worker, "pickle", stylize_request(images, content=str(tmp_path / "objects.npy")), tmp_path,
            "must be floating point")


def test_outputs_that_are_inputs_are_refused(worker, images, tmp_path):
    for output in (images["content"], images["styles"][0]):
        refused(worker, "same", stylize_request(images, output=output), tmp_path, "refusing to write over")
    link = tmp_path / "link.npy"
    link.symlink_to(images["content"])
    refused(worker, "link", stylize_request(images, output=str(link)), tmp_path, "refusing to write over")
    temporal = {"previous_content": images["content"], "previous_output": None}
    refused(worker, "prev", stylize_request(images, content=images["styles"][0], styles=[images["styles"][0]],
                                            output=images["content"], temporal=temporal), tmp_path, "refusing")
    refused(worker, "preview", stylize_request(images, preview=images["output"], preview_every=1), tmp_path,
            "two outputs of the job are the same file")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    refused(worker, "model", {"cmd": "fast_apply", "model": str(model), "content": images["content"],
                              "output": images["content"]}, tmp_path, "refusing to write over")


@pytest.mark.parametrize(
    "output, message",
    [
        (lambda d: str(d), "is a folder"),
        (lambda d: str((d / "folder.npy").mkdir() or d / "folder.npy"), "is a folder"),
        (lambda d: str(d / "missing" / "out.npy"), "output folder does not exist"),
        (lambda d: "/proc/neural-style-out.npy", "output folder is not writable"),
        (lambda d: str(d / "out.png"), "must be a .npy path"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_work(worker, images, tmp_path, output, message):
    path = output(tmp_path)
    refused(worker, "out", stylize_request(images, output=path), tmp_path, message)
    refused(worker, "preview", stylize_request(images, preview=path, preview_every=1), tmp_path,
            message.replace("output", "preview"))


def test_fast_mode_requests_are_checked_too(worker, images, tmp_path):
    fast = {"cmd": "fast_train", "frames": [images["content"]], "style": images["styles"][0],
            "model_dir": str(tmp_path)}
    refused(worker, "ft", {**fast, "frames": images["content"]}, tmp_path, "frames must be a non-empty list")
    refused(worker, "ft", {**fast, "model_dir": str(tmp_path / "nope")}, tmp_path, "model_dir does not exist")
    refused(worker, "ft", {**fast, "fast": {"steps": "3"}}, tmp_path, "steps must be a whole number")
    refused(worker, "ft", {**fast, "fast": {"steps": 0}}, tmp_path, "steps must be at least 1")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    apply = {"cmd": "fast_apply", "model": str(model), "content": images["content"], "output": images["output"]}
    refused(worker, "fa", {**apply, "size": 2.5}, tmp_path, "size must be a whole number")
    refused(worker, "fa", {**apply, "size": 10**6}, tmp_path, "size must be between 16 and")
    refused(worker, "fa", {**apply, "device": "tpu"}, tmp_path, "device must be one of")


def test_a_failure_during_a_job_leaves_no_file_behind(worker, images, tmp_path):
    broken = tmp_path / "previous.png"
    broken.write_bytes(b"not a png")
    temporal = {"previous_output": str(broken), "previous_content": images["content"]}
    before = listing(tmp_path)
    stylize(worker, images, "broken", 2, temporal=temporal, preview_every=1, preview=images["preview"])
    error = worker.until("error", "done")[-1]
    assert error["event"] == "error" and "cannot read image" in error["message"]
    assert listing(tmp_path) == before


def test_control_commands_check_their_fields(worker):
    worker.send(cmd="ping", id=[1])
    assert worker.next() == {"event": "error", "id": None, "message": "ping: id must be a string or a whole number, got [1]"}
    worker.send(cmd="quit", now=True)  # refused, so the worker does not quit
    assert worker.next()["message"] == "quit: unknown field(s): now"
    worker.proc.stdin.write('["cmd", "ping"]\n')
    worker.proc.stdin.flush()
    assert "bad request line" in worker.next()["message"]
    worker.send(cmd="ping", id="still")
    assert worker.next() == {"event": "pong", "id": "still"}


def test_progress_events_are_strict_json():
    from engine.progress import Progress
    from engine.worker import progress_fields

    fields = progress_fields(Progress(3, 10, {"total": float("nan"), "style": float("inf"), "tv": 0.5}, 1.23456))
    assert fields["losses"] == {"total": None, "style": None, "tv": 0.5}
    assert json.loads(json.dumps(fields, allow_nan=False))["iteration"] == 3
    assert {"kind", "iteration", "total", "scale", "scales", "tile", "tiles", "frame", "frames", "width", "height",
            "saved", "losses", "elapsed", "stage"} <= set(fields)


def test_every_line_the_worker_wrote_is_strict_json(worker):
    def refuse(name):
        raise ValueError(name)

    assert worker.raw_lines
    for line in worker.raw_lines:
        json.loads(line, parse_constant=refuse)
