"""The engine's Python packages: installing them for the worker, and checking what the worker can import.

"Install Dependencies" runs pip with the worker's Python (the one set in the
preferences, else Blender's own) into `site-packages` in the extension's user
folder, which goes on the worker's PYTHONPATH and never on Blender's own
`sys.path`.  What it installs is the lock file of the package set chosen for
this machine (`package_sets`: its platform, and CUDA, Apple GPU or CPU only):
the engine's one list, `engine/requirements.txt`, resolved for that platform at
the versions the project is tested with, every package pinned, so pip installs
exactly those (`--no-deps`), binary wheels only (a source archive would run its
build code); with the set's cluster lock (Ray) beside it where a Ray Cluster is
set.  pip fills a staging folder beside `site-packages`; a worker then
imports every requirement from it (its `check` command), and only then does
the staging folder replace `site-packages` (two renames), so a failed,
cancelled or broken install leaves the working folder as it was, and a package
of an earlier set (the CUDA libraries after a switch to CPU only) never stays
behind.  A failure says what failed in one sentence.

Nothing here imports bpy: `preferences` passes in the paths and Blender's
online-access setting, so the button, background scripts and tests all use
the same `Install`.  `probe` finds the state of the worker's Python on a thread
and caches it, so drawing the preferences never waits for a Python to start.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from . import os_rules, package_sets
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


def staging_folder(target: str) -> str:
    """Where pip installs before the new packages replace `target` (beside it: one rename, same drive)."""
    return f"{target}.partial"


def install_command(python: str, target: str, locks: Sequence[str], index: str = "") -> list[str]:
    """pip with the worker's Python: exactly the packages of the lock files (no resolving of its own: --no-deps),
    binary wheels only, into `target`; `index`: the package index the set's torch build comes from, besides PyPI."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "--no-deps", "--only-binary", ":all:", "--target", target, *(["--extra-index-url", index] if index else []),
            *(argument for lock in locks for argument in ("-r", lock))]


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
    env = os_rules.child_env({**os.environ, "PYTHONNOUSERSITE": "1"})
    env.pop("PYTHONPATH", None)
    env.pop("PIP_USER", None)  # --user cannot be combined with --target
    return env


class Install:
    """One install, run on a thread: pip, then the worker's import check.

    The UI reads `status` and `finished` from a timer; scripts call `wait()`.
    `cancel()` kills pip (or the checking worker); the folder stays as it was.
    """

    def __init__(self, config: WorkerConfig, target: str, locks: Sequence[str], online: bool, index: str = ""):
        if not online:
            raise DependencyError(OFFLINE)
        self.target = target
        self.staging = staging_folder(target)
        self.packages = sum(len(requirement_lines(lock)) for lock in locks)
        self.command = install_command(config.python, self.staging, locks, index)
        self.config = config
        self.status = InstallStatus("starting pip")
        self.error: str | None = None
        self.cancelled = False
        self.finished = False
        self.modules: dict[str, str] = {}  # what the check imported: module -> version
        self.build: dict = {}  # what the installed torch was built for (package_sets.describe_build)
        self.output: collections.deque[str] = collections.deque(maxlen=PIP_LINES_KEPT)
        self._process: subprocess.Popen | None = None
        self._client: WorkerClient | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="neural-style-install", daemon=True)
        self._thread.start()

    def _staged(self) -> WorkerConfig:
        """The worker's set-up with the staging folder in the place of the installed one."""
        paths = tuple(self.staging if path == self.target else path for path in self.config.paths)
        return dataclasses.replace(self.config, paths=paths if self.staging in paths else (*paths, self.staging))

    def _run(self) -> None:
        try:
            if os.path.lexists(self.staging) and not os_rules.remove_tree(self.staging):
                raise DependencyError(f"cannot remove the unfinished install {self.staging}: close other Blender "
                                      "windows that use Neural Style, then try again")
            for leftover in glob.glob(glob.escape(self.target) + ".old*"):  # what an earlier install left behind
                os_rules.remove_tree(leftover)
            self._pip()
            self.status = InstallStatus("checking: the style engine imports its packages", 0.9)
            result = check(self._staged(), self._watch)
            self.modules, self.build = result["modules"], result.get("build", {})
            self.status = InstallStatus("replacing the previous packages", 0.95)
            try:
                old = os_rules.swap_folder(self.staging, self.target)
            except OSError as exc:
                raise DependencyError(f"cannot replace {self.target} ({exc}): close other Blender windows that use "
                                      "Neural Style, then Install Dependencies again") from None
            if old:
                os_rules.remove_tree(old)  # what Windows keeps (a DLL still loaded) goes with the next install
            self.status = InstallStatus(f"installed and checked: {len(self.modules)} packages import; "
                                        f"{package_sets.describe_build(self.build)}", 1.0)
        except DependencyError as exc:
            self.error = str(exc)
        finally:
            if os.path.lexists(self.staging):
                os_rules.remove_tree(self.staging)
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
                    text=True, encoding="utf-8", errors="replace", env=_pip_env(), **os_rules.popen_options())
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
                # The lock names every package, so the bar fills to 80 % as pip collects them.
                self.status = InstallStatus(f"collecting {os.path.basename(words[1])} ({collected} of {self.packages} "
                                            "packages)", 0.8 * min(collected, self.packages) / max(self.packages, 1))
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
          timeout: float = CHECK_TIMEOUT) -> dict:
    """Start a worker with `config` and have it import every requirement; returns its answer: `modules`
    ({module: version}) and `build` (what torch was built for: `package_sets.describe_build`).

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
                return {key: event[key] for key in ("modules", "build") if key in event}
            if kind in ("error", "exit", "cancelled"):
                raise DependencyError(client.error_message(event) if kind != "cancelled" else "cancelled")
    except WorkerError as exc:
        raise DependencyError(str(exc)) from None
    finally:
        client.close()


@dataclass(frozen=True)
class Probe:
    """What a worker Python can run: `ok` None while the check runs, then True or False with the reason; `modules`:
    what the check imported ({module: version}: "ray" where Ray is installed)."""

    ok: bool | None
    text: str
    modules: dict = dataclasses.field(default_factory=dict)


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
        result = check(config)
        found = Probe(True, package_sets.describe_build(result.get("build", {})), result.get("modules", {}))
    except StyleError as exc:
        found = Probe(False, str(exc))
    with _probe_lock:
        if config in _probes:  # not forgotten meanwhile
            _probes[config] = found


def forget_probes() -> None:
    """After an install: check again on the next draw."""
    with _probe_lock:
        _probes.clear()
