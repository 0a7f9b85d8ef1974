"""Blender's side of the engine boundary: spawns `python -m engine.worker` and talks to it.

The worker speaks JSON lines (docs/worker-protocol.md).  Its stdout is read on a
thread into a queue, so Blender's main thread only ever does non-blocking
`next_event` calls; when the process ends, for any reason, the queue receives
one final `exit` event, which callers turn into a clear error.  Nothing here
imports bpy, so it is tested and usable without Blender.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from . import os_rules
from .errors import StyleError

STDERR_LINES_KEPT = 40


class WorkerError(StyleError):
    """The worker could not start, or stopped; the message is shown to the user as is."""


@dataclass(frozen=True)
class WorkerConfig:
    """How to start a worker; two configs that compare equal can share one process."""

    python: str
    # Directories put on PYTHONPATH: the folder holding `engine/`, then installed dependencies.
    paths: tuple[str, ...]
    offline: bool = True
    cache_dir: str = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([*self.paths, *([existing] if existing else [])])
        env = os_rules.child_env(env)  # UTF-8 and unbuffered, whatever the system's code page
        # The engine downloads weights only when this is unset (Blender's "Allow Online Access").
        if self.offline:
            env["NEURAL_STYLE_OFFLINE"] = "1"
        else:
            env.pop("NEURAL_STYLE_OFFLINE", None)
        if self.cache_dir:
            env["NEURAL_STYLE_CACHE"] = self.cache_dir
        return env


@functools.lru_cache(maxsize=8)
def imports_torch(python: str, paths: tuple[str, ...] = ()) -> bool:
    """Whether `python` can import torch with `paths` on its path (cached: it takes seconds)."""
    env = WorkerConfig(python, paths).env()
    try:
        done = subprocess.run([python, "-c", "import torch"], env=env, capture_output=True, timeout=120,
                              **os_rules.popen_options())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_python(configured: str, paths: tuple[str, ...], own: str = sys.executable) -> str:
    """The interpreter for the worker: the configured one, else Blender's own (`own`) if it has torch."""
    if configured:
        if not os.path.isfile(configured):
            raise WorkerError(f"the worker Python set in the add-on preferences does not exist: {configured}")
        return configured
    if imports_torch(own, paths):
        return own
    raise WorkerError(
        "PyTorch is not available to Blender's Python: use 'Install Dependencies' in the add-on "
        "preferences, or set a Python interpreter that has torch installed"
    )


class WorkerClient:
    """One running worker process and the events it has sent."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.events: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        try:
            self.process = subprocess.Popen(
                [config.python, "-m", "engine.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                # A neutral working directory: `engine` must come from `paths`, never from wherever Blender was started.
                # A new interpreter (never a fork of Blender), without a console window on Windows.
                env=config.env(), bufsize=0, cwd=tempfile.gettempdir(), **os_rules.popen_options(),
            )
        except OSError as exc:
            raise WorkerError(f"could not start the style engine with {config.python}: {exc}") from None
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="neural-style-log", daemon=True)
        self._stderr_reader.start()
        threading.Thread(target=self._read_stdout, name="neural-style-events", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            try:
                self.events.put(json.loads(os_rules.read_protocol_line(raw)))
            except ValueError:
                self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())
        code = self.process.wait()
        self._stderr_reader.join(timeout=2)  # so the exit message can quote the last log line
        self.events.put({"event": "exit", "code": code})

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            print(f"[neural style worker] {line}", file=sys.stderr)

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(os_rules.protocol_line(message))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerError(self.exit_message()) from None

    def next_event(self, timeout: float = 0.0) -> dict | None:
        """The next event, waiting up to `timeout` seconds; None when there is none yet."""
        try:
            return self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        event = self.next_event(timeout)
        if event is None:
            self.kill()
            raise WorkerError(f"the style engine did not start within {timeout:.0f} seconds")
        if event.get("event") != "ready":
            raise WorkerError(self.error_message(event))

    def exit_message(self) -> str:
        code = self.process.wait(timeout=10) if self.process.poll() is None else self.process.returncode
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        detail = f": {last}" if last else ""
        return f"the style engine stopped unexpectedly (exit code {code}){detail}"

    def error_message(self, event: dict) -> str:
        """A one-line message for an `error` or `exit` event."""
        if event.get("event") == "exit":
            return self.exit_message()
        return event.get("message") or f"unexpected message from the style engine: {event}"

    def cancel(self) -> None:
        if self.alive:
            self.send({"cmd": "cancel"})

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to quit (it cancels a running job first); kill it if it does not."""
        if self.alive:
            try:
                self.send({"cmd": "quit"})
                self.process.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
            self.process.wait()


_shared: WorkerClient | None = None


def shared_worker(config: WorkerConfig) -> WorkerClient:
    """A running worker for `config`, kept between jobs so torch and the network load once."""
    global _shared
    if _shared is not None and (not _shared.alive or _shared.config != config):
        _shared.close()
        _shared = None
    if _shared is None:
        client = WorkerClient(config)
        client.wait_ready()
        _shared = client
    return _shared


def shutdown() -> None:
    """Stop the shared worker (add-on unregister, Blender quit)."""
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None
