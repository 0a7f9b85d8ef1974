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
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

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
        self.proc.stderr.close()


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
    stylize(worker, images, "long", 5000)
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
