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
            if cmd == "stylize":
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
    from .temporal import TemporalOptions, linked_motion, stylize_frame

    if not isinstance(temporal, dict):
        raise EngineError("the temporal field must be an object")
    settings = TemporalOptions.from_dict(temporal.get("options") or {})
    previous = read_image(temporal["previous_output"]) if temporal.get("previous_output") else None
    motion = None
    if previous is not None:
        before = temporal.get("previous_content")
        motion = linked_motion(
            settings, content, temporal.get("vectors"),
            load_array(before, "previous content") if before else None, temporal.get("previous_vectors"),
        )
    return stylize_frame(content, styles, options, settings, previous, motion, progress, cancel)


def run_job(seq: int, request: dict, commands: Commands, channel: Channel) -> None:
    """Run one `stylize` request and report exactly one of done, error or cancelled."""
    job_id = request.get("id")
    if commands.cancelled(seq):
        channel.emit("cancelled", id=job_id)
        return
    try:
        missing = [key for key in ("content", "styles", "output") if not request.get(key)]
        if missing:
            raise EngineError(f"stylize request is missing {', '.join(missing)}")
        content = load_array(request["content"], "content")
        styles = [load_array(path, "style") for path in request["styles"]]
        options = StyleOptions.from_dict(request.get("options") or {})
        preview_every = int(request.get("preview_every") or 0)
        preview_path = request.get("preview")

        def progress(p) -> None:
            channel.emit(
                "progress", id=job_id, iteration=p.iteration, total=p.total,
                losses={k: float(v) for k, v in p.losses.items()}, stage=p.stage, elapsed=round(p.elapsed, 3),
            )
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
