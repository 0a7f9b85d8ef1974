"""What each operating system allows, in one place, for the engine and the Blender add-on alike.

Windows, macOS and Linux differ in the details that break a tool that was only
run on one of them: file names Windows refuses, paths compared without caring
about case or slash direction, `os.replace` failing while another program has
the target open, relative paths that cannot cross drive letters, processes
that must be started fresh (spawn) rather than forked, console windows that
pop up, text streams that turn "\\n" into "\\r\\n", and where Blender keeps its
own Python.  Every such rule is a function here; the callers (the worker, the
engine's file writing, the add-on's installer and worker client) use them and
never test `sys.platform` themselves.

Each rule takes the operating system as an argument (`system`: "windows",
"macos" or "linux", Blender's names; default: this machine) and does its path
work with `ntpath` or `posixpath` accordingly, so the Windows and macOS cases
run as plain functions on any machine (tests/test_os_rules.py).

This file imports only the standard library and nothing of the `engine`
package: the add-on, whose process never imports `engine`, loads this very
file by its path (neural_style_addon/os_rules.py), so there is one copy of
each rule.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import ntpath
import os
import platform
import posixpath
import shutil
import sys
import time
from typing import Callable

# Blender's platform names (blender_ext.py: platform.system() and platform.machine(), lower case, mapped).
_SYSTEMS = {"darwin": "macos"}
_MACHINES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "aarch32": "arm32"}


def system_name(name: str | None = None) -> str:
    """"windows", "macos" or "linux" (Blender's names) for `platform.system()`-style `name` (default: this one)."""
    name = (name or platform.system()).lower()
    return _SYSTEMS.get(name, name)


def platform_tag(system: str | None = None, machine: str | None = None) -> str:
    """Blender's platform name for this machine ("linux-x64", "windows-x64", "macos-arm64", ...), the names of
    the manifest's `platforms` and of the add-on's package sets."""
    machine = (machine or platform.machine()).lower()
    return f"{system_name(system)}-{_MACHINES.get(machine, machine)}"


def paths(system: str | None = None):
    """The path module of `system`: `ntpath` for Windows (drive letters, backslashes), else `posixpath`."""
    return ntpath if system_name(system) == "windows" else posixpath


# ---------------------------------------------------------------------------------------------------------------
# Paths


def same_path(a: str, b: str, system: str | None = None) -> bool:
    """Whether two absolute paths name the same file by their spelling: on Windows case and slash direction do
    not matter (`C:/Renders/A.png` is `c:\\renders\\a.png`); on macOS and Linux the spelling is compared as it is
    (a case-insensitive macOS volume is still caught by `os.path.samefile` where both files exist)."""
    where = paths(system)
    return where.normcase(where.normpath(a)) == where.normcase(where.normpath(b))


def extended_path(path: str, system: str | None = None) -> str:
    """`path` in the form that lifts Windows' 260-character limit (`\\\\?\\C:\\...`, `\\\\?\\UNC\\server\\share\\...`)
    whatever the registry's LongPathsEnabled says; unchanged elsewhere.  torch's deepest file lies 173 characters
    below site-packages, more than the limit leaves under a user's AppData folder."""
    if system_name(system) != "windows" or path.startswith("\\\\?\\"):
        return path
    path = ntpath.normpath(path)
    return "\\\\?\\UNC\\" + path[2:] if path.startswith("\\\\") else "\\\\?\\" + path


def blend_relative(path: str, blend_dir: str, system: str | None = None) -> str:
    """`path` as Blender's relative form ("//textures/wave.png") from the .blend's folder, or `path` unchanged
    when no relative form exists: on Windows a path on another drive (`bpy.path.relpath` raises there)."""
    where = paths(system)
    if path.startswith("//"):
        return path
    try:
        return "//" + where.relpath(path, blend_dir)
    except ValueError:  # "path is on mount 'D:', start on mount 'C:'"
        return path


# ---------------------------------------------------------------------------------------------------------------
# File names

# Device names Windows reserves in every folder, with or without an extension ("NUL.txt" is NUL too).
RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in
                                                             ("0123456789" + "\u00b9\u00b2\u00b3"))})
FORBIDDEN_CHARACTERS = '<>:"/\\|?*'


def name_problem(name: str) -> str | None:
    """Why Windows cannot hold a file or folder called `name`, in one clause; None when it can.

    The engine writes only names every system can hold (its results are shared between machines: a Ray
    cluster's nodes, a studio's file server), so a name Linux or macOS would accept is refused everywhere.
    """
    if name in ("", ".", ".."):
        return f"{name!r} is not a file name"
    bad = sorted({ch for ch in name if ch in FORBIDDEN_CHARACTERS or ord(ch) < 32})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        return f"the file name {name!r} contains {shown}, which Windows does not allow in file names"
    if name[-1] in ". ":
        what = "a dot" if name[-1] == "." else "a space"
        return f"the file name {name!r} ends with {what}, which Windows drops from file names"
    device = name.split(".")[0].rstrip(" ").upper()
    if device in RESERVED_NAMES:
        return f"the file name {name!r} is the device name {device}, which Windows reserves in every folder"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Replacing files and folders


class FileInUseError(PermissionError):
    """`os.replace` kept failing because another program holds the target (or a file in it) open."""

    def __str__(self) -> str:
        return self.strerror


def _open_elsewhere(exc: OSError) -> bool:
    # ERROR_ACCESS_DENIED (5) and ERROR_SHARING_VIOLATION (32): what Windows answers while a file is open.
    return isinstance(exc, PermissionError) and getattr(exc, "winerror", exc.errno) in (5, 32, errno.EACCES)


def replace_file(source: str | os.PathLike, target: str | os.PathLike, system: str | None = None, *,
                 attempts: int = 20, wait: float = 0.05, replace: Callable = os.replace,
                 sleep: Callable[[float], None] = time.sleep) -> None:
    """`os.replace(source, target)`, which on Windows fails while any program (an image viewer, the virus
    scanner, a thumbnailer, another Blender) has `target` open: there it is tried again for about 10 s in all,
    then refused with one sentence naming the file.  On macOS and Linux a replace never waits on readers, so
    a failure there is raised at once."""
    windows = system_name(system) == "windows"
    for attempt in range(attempts):
        try:
            replace(source, target)
            return
        except OSError as exc:
            if not (windows and _open_elsewhere(exc)):
                raise
            if attempt == attempts - 1:
                raise FileInUseError(errno.EACCES, f"cannot replace {os.fspath(target)}: another program has it "
                                     "open (close it there and try again)", os.fspath(target)) from None
            sleep(wait * (attempt + 1))


def swap_folder(new: str, target: str, system: str | None = None, **retry) -> str | None:
    """Put the folder `new` in the place of `target` (which may not exist) in two renames, so a reader sees
    either the old folder or the new one; returns where the old one went (`<target>.old`, or `.old2`... while
    an earlier one could not be deleted), for the caller to delete, or None.  On Windows a folder holding a
    loaded library (torch's DLLs in a running worker) cannot be renamed: that ends in `FileInUseError` after the
    retries of `replace_file`, with `target` as it was."""
    old = None
    if os.path.lexists(target):
        old, n = f"{target}.old", 1
        while os.path.lexists(old) and not remove_tree(old):
            n += 1
            old = f"{target}.old{n}"
        replace_file(target, old, system, **retry)
    try:
        replace_file(new, target, system, **retry)
    except OSError:
        if old is not None:
            os.replace(old, target)  # put the old folder back
        raise
    return old


def remove_tree(path: str) -> bool:
    """Delete a folder of this machine as far as possible (a DLL Windows has loaded stays), through
    `extended_path`, so files deeper than Windows' path limit go too; True when it is gone."""
    shutil.rmtree(extended_path(os.path.abspath(path)), ignore_errors=True)
    return not os.path.lexists(path)


# ---------------------------------------------------------------------------------------------------------------
# Processes

# Processes the engine starts are fresh interpreters, never forks: a fork of a process holding CUDA, Metal or
# OpenMP threads inherits them half-alive (CUDA refuses outright), and Windows cannot fork at all, so Linux
# does here what Windows and macOS do by default.
START_METHOD = "spawn"
# Windows: start console programs (Python, pip) without a console window popping up over Blender.
CREATE_NO_WINDOW = 0x08000000


def use_spawn() -> str:
    """Make `spawn` the start method of every process `multiprocessing` (and libraries using it) starts here."""
    multiprocessing.set_start_method(START_METHOD, force=True)
    return multiprocessing.get_start_method()


def popen_options(system: str | None = None) -> dict:
    """Extra `subprocess.Popen` arguments for starting the worker or pip from Blender.

    Always a new interpreter from an argument list (no shell, so spaces, quotes and non-ASCII characters in
    paths need no quoting rules of their own); on Windows without a console window.
    """
    return {"creationflags": CREATE_NO_WINDOW} if system_name(system) == "windows" else {}


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a Python child whose output the host reads: UTF-8 on every stream whatever the system's code
    page (Windows' is often cp1252, which cannot print a path like "C:\\Users\\Zoë\\渲染"), unbuffered, and
    never importing from its working directory (Python 3.11+): the worker runs in the system's temp folder,
    where anything may lie, Ray's own `/tmp/ray` folder among it, which `import ray` would otherwise take for
    an empty namespace package where Ray is not installed."""
    return {**env, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}


def blender_python(executable: str, resources: str, system: str | None = None,
                   version: tuple[int, int] = sys.version_info[:2]) -> str:
    """The Python interpreter of a Blender install.

    Inside Blender `sys.executable` is normally that interpreter (`<install>\\4.2\\python\\bin\\python.exe` on
    Windows, `Blender.app/Contents/Resources/4.2/python/bin/python3.11` on macOS,
    `<install>/4.2/python/bin/python3.11` on Linux), or the one of a virtualenv for the `bpy` module.  Where it
    is Blender's own binary instead, the interpreter is found in `resources` (`bpy.utils.resource_path("LOCAL")`,
    the folder named after the version).
    """
    where = paths(system)
    if where.basename(executable).lower().startswith("python"):
        return executable
    binary = "python.exe" if system_name(system) == "windows" else f"python{version[0]}.{version[1]}"
    return where.join(resources, "python", "bin", binary)


# ---------------------------------------------------------------------------------------------------------------
# The worker protocol's lines

NEWLINE = "\n"


def protocol_line(message: dict) -> bytes:
    """One protocol line: compact ASCII JSON (non-ASCII characters escaped, so no code page can mangle a path)
    ending in "\\n" alone on every system."""
    return (json.dumps(message) + NEWLINE).encode("ascii")


def read_protocol_line(raw: bytes) -> str:
    """The JSON text of a received line, without its ending, whether a Windows text stream made it "\\r\\n"."""
    return raw.decode("utf-8").rstrip("\r\n")
