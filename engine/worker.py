"""The style engine as a separate process: `python -m engine.worker`.

Blender (or any other host) talks to the engine only through this module, so
the host never imports torch and a crash here never takes the host down.  The
protocol, JSON lines on stdin/stdout with pixels in `.npy` files, is specified
in docs/worker-protocol.md; this file is its one implementation.

Threads: a reader thread owns stdin, so `cancel`, `ping` and `quit` are seen
while a job runs on the main thread; the engine polls the cancel flag once an
iteration.  Only protocol lines reach the real stdout: file descriptor 1 is
pointed at stderr at start-up, so a stray `print` or a
library writing to fd 1 lands in the log instead of corrupting the stream
(the engine loads torch only when the first job runs, after that switch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO

import numpy as np

from . import Cancelled, EngineError, StyleOptions, stylize

PROTOCOL_VERSION = 1
JOBS = ("stylize", "fast_train", "fast_apply")  # commands queued and run one at a time


class Channel:
    """Writes one JSON event a line to the protocol stream, from any thread."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}, default=float)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def claim_stdout() -> IO[str]:
    """Return a private stream on the original stdout and send fd 1 to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


class Commands:
    """Reads stdin on a thread; queues jobs and handles control commands at once.

    Every line gets a sequence number.  `cancel` stops every job received
    before it (running or queued) and none after it, so a cancel sent right
    after a request can never be lost or hit the next job.
    """

    def __init__(self, stream: IO[bytes], channel: Channel):
        self._stream = stream
        self._channel = channel
        self.jobs: queue.Queue = queue.Queue()
        self._cancel_seq = -1
        self._thread = threading.Thread(target=self._read, name="worker-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancelled(self, seq: int) -> bool:
        return self._cancel_seq > seq

    def _read(self) -> None:
        seq = 0
        for raw in self._stream:
            seq += 1
            try:
                message = json.loads(raw)
                cmd = message["cmd"]
            except (ValueError, KeyError, TypeError):
                self._channel.emit("error", message=f"bad request line: {raw[:200]!r}")
                continue
            if cmd in JOBS:
                self.jobs.put((seq, message))
            elif cmd == "cancel":
                self._cancel_seq = seq
            elif cmd == "ping":
                self._channel.emit("pong", id=message.get("id"))
            elif cmd == "quit":
                break
            else:
                self._channel.emit("error", id=message.get("id"), message=f"unknown command {cmd!r}")
        # quit or end of input (the host went away): stop the running job and leave.
        self._cancel_seq = seq + 1
        self.jobs.put(None)


def load_array(path: str, what: str) -> np.ndarray:
    """Read an HxWx3/4 float image array written by the host."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the {what} pixels from {path}: {exc}") from None
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise EngineError(f"the {what} pixels must be HxWx3 or HxWx4, got shape {array.shape}")
    return array.astype(np.float32, copy=False)


def save_array(path: str, array: np.ndarray) -> None:
    """Write atomically, so the host never reads a half-written file."""
    partial = f"{path}.partial.npy"
    np.save(partial, np.ascontiguousarray(array, dtype=np.float32))
    os.replace(partial, path)


def stylize_linked(content, styles, options, temporal: dict, progress, cancel) -> np.ndarray:
    """A frame tied to the previous stylized frame (the request's `temporal` field)."""
    from .images import read_image  # torch loads with the first job, not at start-up
    from .temporal import stylize_frame

    settings = temporal_settings(temporal)
    previous, motion = previous_frame(content, settings, temporal)
    return stylize_frame(content, styles, options, settings, previous, motion, progress, cancel)


def temporal_settings(temporal):
    from .temporal import TemporalOptions

    if not isinstance(temporal, dict):
        raise EngineError("the temporal field must be an object")
    return TemporalOptions.from_dict(temporal.get("options") or {})


def previous_frame(content, settings, temporal: dict):
    """(previous stylized frame, motion from it to `content`) from a `temporal` field; Nones when unknown."""
    from .images import read_image
    from .temporal import linked_motion

    previous = read_image(temporal["previous_output"]) if temporal.get("previous_output") else None
    if previous is None:
        return None, None
    before = temporal.get("previous_content")
    return previous, linked_motion(
        settings, content, temporal.get("vectors"),
        load_array(before, "previous content") if before else None, temporal.get("previous_vectors"),
    )


def fast_train(request: dict, progress, cancel) -> str:
    """Train (or reuse) a fast-mode model; the result is the model's path."""
    from .fast import train  # torch loads with the first job
    from .fast_options import FastOptions

    missing = [key for key in ("frames", "style", "model_dir") if not request.get(key)]
    if missing:
        raise EngineError(f"fast_train request is missing {', '.join(missing)}")
    frames = [load_array(path, "frame") if path.endswith(".npy") else path for path in request["frames"]]

    def report(p) -> None:
        stage = f"training step {p.iteration} of {p.total}" if p.stage == "training" else p.stage
        progress(dataclasses.replace(p, stage=stage))

    model = train(
        frames, load_array(request["style"], "style"), StyleOptions.from_dict(request.get("options") or {}),
        FastOptions.from_dict(request.get("fast") or {}), request["model_dir"], report, cancel,
    )
    return str(model)


def fast_apply(request: dict, cancel) -> np.ndarray:
    """One frame through a trained model, blended with the previous stylized frame when `temporal` says so."""
    from .fast import apply
    from .temporal import blend_previous

    missing = [key for key in ("model", "content", "output") if not request.get(key)]
    if missing:
        raise EngineError(f"fast_apply request is missing {', '.join(missing)}")
    content = load_array(request["content"], "content")
    result = apply(request["model"], content, request.get("device") or "auto", request.get("size"))
    temporal = request.get("temporal")
    if temporal:
        settings = temporal_settings(temporal)
        previous, motion = previous_frame(content, settings, temporal)
        if settings.enabled and motion is not None and not cancel():
            result = blend_previous(result, previous, motion, settings.blend)
    return result


def emit_progress(channel: Channel, job_id, p) -> None:
    channel.emit(
        "progress", id=job_id, iteration=p.iteration, total=p.total,
        losses={k: float(v) for k, v in p.losses.items()}, stage=p.stage, elapsed=round(p.elapsed, 3),
    )


def run_fast_job(request: dict, job_id, cancel, channel: Channel) -> None:
    """A `fast_train` or `fast_apply` request, ending in `done` (errors propagate to `run_job`)."""
    started = time.perf_counter()
    if request["cmd"] == "fast_train":
        output = fast_train(request, lambda p: emit_progress(channel, job_id, p), cancel)
        channel.emit("done", id=job_id, output=output, elapsed=round(time.perf_counter() - started, 3))
        return
    result = fast_apply(request, cancel)
    save_array(request["output"], result)
    channel.emit("done", id=job_id, output=request["output"], shape=list(result.shape),
                 elapsed=round(time.perf_counter() - started, 3))


def run_job(seq: int, request: dict, commands: Commands, channel: Channel) -> None:
    """Run one job request and report exactly one of done, error or cancelled."""
    job_id = request.get("id")
    if commands.cancelled(seq):
        channel.emit("cancelled", id=job_id)
        return
    try:
        if request["cmd"] != "stylize":
            run_fast_job(request, job_id, lambda: commands.cancelled(seq), channel)
            return
        missing = [key for key in ("content", "styles", "output") if not request.get(key)]
        if missing:
            raise EngineError(f"stylize request is missing {', '.join(missing)}")
        content = load_array(request["content"], "content")
        styles = [load_array(path, "style") for path in request["styles"]]
        options = StyleOptions.from_dict(request.get("options") or {})
        preview_every = int(request.get("preview_every") or 0)
        preview_path = request.get("preview")

        def progress(p) -> None:
            emit_progress(channel, job_id, p)
            if preview_path and preview_every > 0 and p.iteration % preview_every == 0 and p.iteration < p.total:
                image = p.image()
                if image is not None:
                    save_array(preview_path, image)
                    channel.emit("preview", id=job_id, path=preview_path, iteration=p.iteration)

        started = time.perf_counter()
        cancel = lambda: commands.cancelled(seq)  # noqa: E731
        if request.get("temporal"):
            result = stylize_linked(content, styles, options, request["temporal"], progress, cancel)
        else:
            result = stylize(content, styles, options, progress=progress, cancel=cancel)
        save_array(request["output"], result)
        channel.emit(
            "done", id=job_id, output=request["output"], shape=list(result.shape),
            elapsed=round(time.perf_counter() - started, 3),
        )
    except Cancelled:
        channel.emit("cancelled", id=job_id)
    except EngineError as exc:
        channel.emit("error", id=job_id, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - the host must get one line, the log gets the traceback
        traceback.print_exc(file=sys.stderr)
        channel.emit("error", id=job_id, message=f"internal error in the style engine: {type(exc).__name__}: {exc}")


def main() -> int:
    channel = Channel(claim_stdout())
    commands = Commands(sys.stdin.buffer, channel)
    commands.start()
    channel.emit("ready", protocol=PROTOCOL_VERSION, pid=os.getpid())
    while (item := commands.jobs.get()) is not None:
        run_job(*item, commands, channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
