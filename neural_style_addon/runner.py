"""Long jobs as generators of `Status`, driven by the modal operator or by a plain loop.

A task is written once, top to bottom (see `tasks`), and yields whenever it
waits for the worker.  Interactive Blender advances it from a window-manager
timer (so the UI stays live); background mode and the Python API run it to the
end with `Task.run()`.  `send_job` and `follow` are a task's side of the worker
protocol: a request goes out, its events come back as `Status` updates until
it ends in `done`, `cancelled` or an error.  However a task ends (an error, a
cancel, KeyboardInterrupt, Blender closing the operator) the worker stops the
request it was following before the task's files are removed (`abandon`), so
the next job never waits behind abandoned work.  With `echo` (background mode)
the task prints its progress to stdout, one line per frame or iteration block.
"""

from __future__ import annotations

import time
import traceback
import uuid
from typing import TYPE_CHECKING, Callable, Generator

import numpy as np

from .errors import StyleError
from .job import Status
from .worker_client import WorkerClient, WorkerError

if TYPE_CHECKING:
    import bpy

# Seconds a blocking run waits for each worker event; the modal path never waits.
SYNC_WAIT = 0.25
# Seconds the worker gets to honour a cancel (it checks once an iteration) before it is killed,
# e.g. while it is still loading a network or downloading weights.
CANCEL_GRACE = 10.0
# Background mode prints a progress line each time the task moves on by this share (and on each new frame).
ECHO_STEP = 0.05


class TaskCancelled(StyleError):
    def __init__(self):
        super().__init__("cancelled")


class Task:
    """A running generator plus what the UI shows about it."""

    def __init__(self, client: WorkerClient, make_steps: Callable[["Task"], Generator], echo: bool = False):
        self.client = client
        self.echo = echo  # print progress lines to stdout (background mode, render farms)
        self._echoed: tuple[str, int] | None = None
        self.wait = SYNC_WAIT
        self.status = Status("starting")
        self.result = None
        self.error: str | None = None
        self.cancelled = False
        self.cancel_requested = False
        self.cancel_time = 0.0
        self.finished = False
        self.idle = False  # the last step found nothing to do (waiting for the worker)
        self.image: bpy.types.Image | None = None  # what the Image Editor should show
        self._steps = make_steps(self)

    def step(self) -> bool:
        """Advance until the task next waits; False once it has finished (see result/error/cancelled)."""
        if self.finished:
            return False
        try:
            status = next(self._steps)
            self.idle = status is None
            if status is not None:
                self.status = status
                if self.echo:
                    self.print_status(status)
            return True
        except StopIteration as stop:
            self.result = stop.value
        except TaskCancelled:
            self.cancelled = True
        except StyleError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill a modal operator; cleanup already ran
            traceback.print_exc()
            self.error = f"internal error in the Neural Style add-on: {type(exc).__name__}: {exc}"
        except BaseException:  # KeyboardInterrupt, SystemExit: the steps' cleanup already stopped the worker's job
            self.finished = self.cancelled = True
            raise
        self.finished = True
        return False

    def print_status(self, status: Status) -> None:
        """One stdout line per frame and per `ECHO_STEP` of progress (`blender -b` shows nothing else)."""
        mark = (status.label, int(status.fraction / ECHO_STEP))
        if mark != self._echoed:
            self._echoed = mark
            print(f"Neural Style: {status.text} ({status.fraction:.0%})", flush=True)

    def run(self):
        """Run to the end in this thread (background mode, scripts); raise on error or cancel."""
        try:
            while self.step():
                pass
        finally:
            self.close()  # only does something when the loop was interrupted (KeyboardInterrupt)
        if self.cancelled:
            raise TaskCancelled()
        if self.error:
            raise StyleError(self.error)
        return self.result

    def cancel(self) -> None:
        """Stop the running request, and any the task would still send."""
        self.cancel_requested = True
        self.cancel_time = time.monotonic()
        if not self.finished:
            try:
                self.client.cancel()
            except WorkerError:
                pass  # the worker is gone; its exit event ends the task

    def close(self) -> None:
        """Stop the generator early (its cleanup runs) and make sure the worker stops working for it."""
        if not self.finished:
            self.cancel()
            self._steps.close()
            self.finished = self.cancelled = True


def send_job(task: Task, request: dict) -> str:
    """Send a job request (adding its id) unless the task was cancelled; returns the id."""
    if task.cancel_requested:
        raise TaskCancelled()
    job_id = uuid.uuid4().hex
    task.client.send({**request, "id": job_id})
    return job_id


def progress_text(event: dict) -> str:
    """A status line from a `progress` event's structured fields (docs/worker-protocol.md)."""
    step, total = event["iteration"], event["total"]
    if event.get("kind") == "frame" and event.get("frames"):  # a shot on a cluster: frames as they arrive
        return f"{event['frame']} of {event['frames']} frames done"
    text = f"training step {step} of {total}" if event.get("kind") == "train" else f"iteration {step}/{total}"
    if event.get("scales", 0) > 1:
        text += f", scale {event['scale']}/{event['scales']}"
    if event.get("tiles", 0) > 0:
        text += f", tile {event['tile']}/{event['tiles']}"
    loss = event.get("losses", {}).get("total")
    text += f", loss {loss:.4g}" if loss is not None else ""
    saved = event.get("saved", 0)
    if saved and step > saved:  # the convergence stop ended a scale early: the iterations and time it saved
        text += f", {saved} iterations (~{saved * event.get('elapsed', 0.0) / (step - saved):.0f} s) saved"
    return text


def follow(task: Task, job_id: str, label: str = "", share: tuple[float, float] = (0.0, 1.0),
           on_preview: Callable[[np.ndarray], None] | None = None):
    """Follow a sent request to its end, yielding its progress; returns its `done` event.

    `share` is the slice (start, width) of the task's progress bar this request fills.
    """
    start, width = share
    ended = False  # the worker has finished with the request (or is gone)
    try:
        while True:
            event = task.client.next_event(task.wait)
            if event is None:
                if task.cancel_requested and time.monotonic() - task.cancel_time > CANCEL_GRACE:
                    task.client.kill()  # the next job starts a fresh worker
                    ended = True
                    raise TaskCancelled()
                yield None
                continue
            kind = event.get("event")
            if event.get("id") not in (job_id, None) or kind in ("pong", "ready"):
                continue  # left over from an earlier, cancelled job
            ended = kind in ("done", "cancelled", "error", "exit")
            if kind == "progress":
                fraction = start + width * event["iteration"] / max(event["total"], 1)
                yield Status(f"{label}{progress_text(event)}", fraction, label)
            elif kind == "preview" and on_preview:
                on_preview(np.load(event["path"]))
            elif kind == "done":
                return event
            elif kind == "cancelled":
                raise TaskCancelled()
            elif kind in ("error", "exit"):
                raise StyleError(task.client.error_message(event))
    finally:
        if not ended:
            abandon(task.client, job_id)


def abandon(client: WorkerClient, job_id: str) -> None:
    """Stop a request nobody follows any more, and wait until the worker has let go of it.

    The worker honours a cancel at its next iteration; until it reports the
    job's end it may still write the job's files (previews, output) into the
    task's temporary folder, and a next job would queue behind it.  So this
    waits for that end, up to `CANCEL_GRACE` seconds, and otherwise kills the
    worker (the next job starts a fresh one).  A second Ctrl-C kills it at once.
    """
    try:
        client.cancel()
        deadline = time.monotonic() + CANCEL_GRACE
        while time.monotonic() < deadline:
            event = client.next_event(SYNC_WAIT)
            if event is None:
                continue
            if event.get("event") == "exit" or (
                    event.get("id") == job_id and event.get("event") in ("done", "cancelled", "error")):
                return
        client.kill()
    except WorkerError:
        return  # the worker is gone already
    except BaseException:
        client.kill()
        raise
