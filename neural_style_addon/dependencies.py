"""The engine's Python packages: installing them for the worker, and checking what the worker can import.

"Install Dependencies" runs pip with the worker's Python (the one set in the
preferences, else Blender's own) into `site-packages` in the extension's user
folder, which goes on the worker's PYTHONPATH and never on Blender's own
`sys.path`.  What it installs is the engine's one list, `engine/requirements.txt`,
at the versions the project is tested with (`engine/constraints.txt`), binary
wheels only (a source archive would run its build code).  pip with `--target`
stages everything in a temporary folder and moves it in only when it has
succeeded, so a failed or cancelled install leaves the old folder as it was.
Afterwards a worker is started and imports every requirement (its `check`
command), and a failure says what failed in one sentence.

Nothing here imports bpy: `preferences` passes in the paths and Blender's
online-access setting, so the button, background scripts and tests all use
the same `Install`.  `probe` finds the state of the worker's Python on a thread
and caches it, so drawing the preferences never waits for a Python to start.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable

from .errors import StyleError
from .worker_client import WorkerClient, WorkerConfig, WorkerError

OFFLINE = ("Online access is off: Install Dependencies downloads the engine's packages from PyPI, so allow it "
           "first (Preferences > System > Network > Allow Online Access)")
PIP_LINES_KEPT = 80
# Seconds a worker gets to start and import everything.
CHECK_TIMEOUT = 300.0


class DependencyError(StyleError):
    """Installing or checking the engine's packages failed; the message says what, in one sentence."""


@dataclass
class InstallStatus:
    text: str
    fraction: float = 0.0


def requirement_lines(path: str) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        raise DependencyError(f"the extension is incomplete: cannot read {path} ({exc.strerror})") from None


def install_command(python: str, target: str, requirements: str, constraints: str) -> list[str]:
    """pip with the worker's Python: the requirements at the tested pins, wheels only, into `target`."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "--upgrade", "--only-binary", ":all:", "--target", target, "-c", constraints,
            *requirement_lines(requirements)]


def pip_failure(lines) -> str:
    """What went wrong, in one line: pip's last ERROR line (not the help link after it), with the
    requirements it names as the cause of a conflict."""
    lines = list(lines)
    text = [line.strip() for line in lines if line.strip()]
    errors = [line for line in text if line.startswith("ERROR:") and "for help visit" not in line]
    found = (errors or text or ["pip printed nothing"])[-1].removeprefix("ERROR:").strip()
    if "The conflict is caused by:" in text:
        causes = []
        for line in lines[[line.strip() for line in lines].index("The conflict is caused by:") + 1:]:
            if not line.startswith(" ") or not line.strip():
                break
            causes.append(line.strip())
        found = f"{found.rstrip('.')}: {'; '.join(causes)}" if causes else found
    return found


def _pip_env() -> dict[str, str]:
    """pip sees only its own Python's packages (not Blender's PYTHONPATH or the user site) and prints promptly."""
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("PIP_USER", None)  # --user cannot be combined with --target
    return env


class Install:
    """One install, run on a thread: pip, then the worker's import check.

    The UI reads `status` and `finished` from a timer; scripts call `wait()`.
    `cancel()` kills pip (or the checking worker); the folder stays as it was.
    """

    def __init__(self, config: WorkerConfig, target: str, requirements: str, constraints: str, online: bool):
        if not online:
            raise DependencyError(OFFLINE)
        self.command = install_command(config.python, target, requirements, constraints)
        self.config = config
        self.status = InstallStatus("starting pip")
        self.error: str | None = None
        self.cancelled = False
        self.finished = False
        self.modules: dict[str, str] = {}  # what the check imported: module -> version
        self.output: collections.deque[str] = collections.deque(maxlen=PIP_LINES_KEPT)
        self._process: subprocess.Popen | None = None
        self._client: WorkerClient | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="neural-style-install", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._pip()
            self.status = InstallStatus("checking: the style engine imports its packages", 0.9)
            self.modules = check(self.config, self._watch)
            self.status = InstallStatus(f"installed and checked: {len(self.modules)} packages import", 1.0)
        except DependencyError as exc:
            self.error = str(exc)
        finally:
            self.finished = True

    def _watch(self, client: WorkerClient) -> None:
        with self._lock:
            self._client = client
            if self.cancelled:
                client.kill()

    def _pip(self) -> None:
        with self._lock:
            if self.cancelled:
                raise DependencyError("cancelled")
            try:
                self._process = subprocess.Popen(
                    self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    text=True, errors="replace", env=_pip_env())
            except OSError as exc:
                raise DependencyError(f"could not run pip with {self.config.python}: {exc.strerror}") from None
        collected = 0
        for raw in self._process.stdout:
            line = raw.rstrip()
            self.output.append(line)
            print(f"[neural style pip] {line}")
            words = line.split()
            if line.startswith(("Collecting ", "Processing ")) and len(words) > 1:
                collected += 1
                # pip finds dependencies as it goes, so the total is unknown: the bar approaches 80 %.
                self.status = InstallStatus(f"collecting {os.path.basename(words[1])} ({collected} packages)",
                                            0.8 * collected / (collected + 8))
            elif line.startswith("Downloading ") and len(words) > 1:
                size = " ".join(words[2:]).strip("()")
                self.status = InstallStatus(f"downloading {os.path.basename(words[1])} {size}".rstrip(),
                                            self.status.fraction)
            elif line.startswith("Installing collected packages"):
                self.status = InstallStatus(f"installing {collected} packages (unpacking takes a while)", 0.8)
        code = self._process.wait()
        if self.cancelled:
            raise DependencyError("cancelled")
        if code != 0:
            if any("No module named pip" in line for line in self.output):
                raise DependencyError(f"{self.config.python} has no pip: install pip for it, or choose another "
                                      "Worker Python in the add-on preferences")
            raise DependencyError(f"pip failed (exit code {code}): {pip_failure(self.output)}")

    def cancel(self) -> None:
        """Kill pip (or the checking worker); `wait()` then raises, and the folder is as it was."""
        with self._lock:
            self.cancelled = True
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
            if self._client is not None:
                self._client.kill()

    def wait(self) -> dict[str, str]:
        """Block until the install has ended; returns what the check imported, or raises DependencyError."""
        self._thread.join()
        if self.cancelled:
            raise DependencyError("installing dependencies was cancelled; nothing was changed")
        if self.error:
            raise DependencyError(self.error)
        return self.modules


def check(config: WorkerConfig, started: Callable[[WorkerClient], None] | None = None,
          timeout: float = CHECK_TIMEOUT) -> dict[str, str]:
    """Start a worker with `config` and have it import every requirement; returns {module: version}.

    Raises DependencyError naming what failed.  `started(client)` is called as
    soon as the process runs, so a caller can kill it to cancel.
    """
    try:
        client = WorkerClient(config)
    except WorkerError as exc:
        raise DependencyError(str(exc)) from None
    if started:
        started(client)
    try:
        client.wait_ready(timeout)
        client.send({"cmd": "check", "id": "check"})
        while True:
            event = client.next_event(timeout)
            if event is None:
                raise DependencyError(f"the style engine did not finish its import check within {timeout:.0f} s")
            kind = event.get("event")
            if kind == "done" and event.get("id") == "check":
                return event["modules"]
            if kind in ("error", "exit", "cancelled"):
                raise DependencyError(client.error_message(event) if kind != "cancelled" else "cancelled")
    except WorkerError as exc:
        raise DependencyError(str(exc)) from None
    finally:
        client.close()


@dataclass(frozen=True)
class Probe:
    """What a worker Python can run: `ok` None while the check runs, then True or False with the reason."""

    ok: bool | None
    text: str


_probes: dict[WorkerConfig, Probe] = {}
_probe_lock = threading.Lock()


def probe(config: WorkerConfig) -> Probe:
    """The cached state of `config`; the first call starts the check on a thread and returns at once."""
    with _probe_lock:
        found = _probes.get(config)
        if found is None:
            found = _probes[config] = Probe(None, "checking the worker's Python...")
            threading.Thread(target=_run_probe, args=(config,), name="neural-style-probe", daemon=True).start()
    return found


def probing() -> bool:
    """Whether a probe is still running (the preferences redraw when it ends)."""
    with _probe_lock:
        return any(found.ok is None for found in _probes.values())


def _run_probe(config: WorkerConfig) -> None:
    try:
        modules = check(config)
        found = Probe(True, f"torch {modules.get('torch', '?')} and {len(modules) - 1} more packages import")
    except StyleError as exc:
        found = Probe(False, str(exc))
    with _probe_lock:
        if config in _probes:  # not forgotten meanwhile
            _probes[config] = found


def forget_probes() -> None:
    """After an install: check again on the next draw."""
    with _probe_lock:
        _probes.clear()
