"""The operating-system rules (engine/os_rules.py), with the Windows and macOS cases run here as plain functions
(ntpath/posixpath), and the worker started the way the add-on starts it, from a folder whose path has spaces
and non-ASCII characters, making its own processes with the `spawn` start method."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import files, os_rules
from engine.errors import EngineError

ROOT = Path(__file__).resolve().parents[1]


def test_the_addon_uses_the_engines_one_copy_without_importing_the_engine_package():
    code = ("import sys; from neural_style_addon import os_rules; "
            "print(os_rules.__file__, 'engine' in sys.modules, os_rules.platform_tag())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    path, engine_imported, tag = done.stdout.split()[-3:]
    assert Path(path) == ROOT / "engine" / "os_rules.py" and engine_imported == "False", done.stderr
    assert tag == os_rules.platform_tag()


@pytest.mark.parametrize("system, machine, tag", [
    ("Windows", "AMD64", "windows-x64"), ("Darwin", "arm64", "macos-arm64"), ("Linux", "x86_64", "linux-x64"),
    ("Darwin", "x86_64", "macos-x64"), ("Linux", "aarch64", "linux-arm64"), ("Windows", "ARM64", "windows-arm64"),
])
def test_platform_tags_are_blenders_names(system, machine, tag):
    assert os_rules.platform_tag(system, machine) == tag


def test_blenders_own_platform_name_for_this_machine_is_ours():
    import bpy

    blender_ext = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    code = f"import runpy; print(runpy.run_path({str(blender_ext)!r})['platform_from_this_system']())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-1] == os_rules.platform_tag(), done.stderr


@pytest.mark.parametrize("a, b, system, same", [
    (r"C:\Renders\Shot 1\A.png", "c:/renders/shot 1/a.png", "windows", True),
    (r"C:\Renders\..\Renders\a.png", r"C:\renders\A.PNG", "windows", True),
    (r"C:\Renders\a.png", r"D:\Renders\a.png", "windows", False),
    (r"\\nas\shots\a.png", "//NAS/Shots/A.png", "windows", True),
    ("/Users/zoë/Renders/A.png", "/Users/zoë/renders/a.png", "macos", False),
    ("/home/zoë/r/../r/a.png", "/home/zoë/r/a.png", "linux", True),
])
def test_same_path_follows_each_systems_spelling_rules(a, b, system, same):
    assert os_rules.same_path(a, b, system) is same


@pytest.mark.parametrize("path, blend_dir, system, expected", [
    (r"C:\Projects\Shot\styles\wave.png", r"C:\Projects\Shot", "windows", r"//styles\wave.png"),
    (r"D:\Library\Stile Ü\wave.png", r"C:\Projects\Shot", "windows", r"D:\Library\Stile Ü\wave.png"),
    (r"\\nas\library\wave.png", r"C:\Projects\Shot", "windows", r"\\nas\library\wave.png"),
    ("/Volumes/Library/wave.png", "/Users/zoë/Shot", "macos", "//../../../Volumes/Library/wave.png"),
    ("//already/relative.png", "/home/a", "linux", "//already/relative.png"),
])
def test_blend_relative_paths_never_cross_a_drive(path, blend_dir, system, expected):
    assert os_rules.blend_relative(path, blend_dir, system) == expected


@pytest.mark.parametrize("path, system, expected", [
    (r"C:\Users\Zoë\AppData\Roaming\Blender Foundation\x", "windows",
     r"\\?\C:\Users\Zoë\AppData\Roaming\Blender Foundation\x"),
    ("C:/Users/a/../b/site-packages", "windows", r"\\?\C:\Users\b\site-packages"),
    (r"\\nas\share\blender\x", "windows", r"\\?\UNC\nas\share\blender\x"),
    (r"\\?\C:\x", "windows", r"\\?\C:\x"),
    ("/home/zoë/x", "linux", "/home/zoë/x"), ("/Users/zoë/x", "macos", "/Users/zoë/x"),
])
def test_extended_paths_lift_the_windows_path_limit(path, system, expected):
    assert os_rules.extended_path(path, system) == expected


def test_remove_tree_deletes_what_is_deeper_than_windows_would_allow(tmp_path):
    deep = tmp_path / "site-packages.old"
    leaf = deep.joinpath(*["torch-2.13.0+cu130.dist-info", "licenses", "third_party"] + ["kineto"] * 20)
    leaf.mkdir(parents=True)
    (leaf / "LICENSE.txt").write_text("x")
    assert len(str(leaf)) > 260 and os_rules.remove_tree(str(deep)) and not deep.exists()


def test_bpys_own_relpath_fails_across_drives_which_is_why_the_rule_exists():
    import ntpath

    with pytest.raises(ValueError):
        ntpath.relpath(r"D:\Library\wave.png", r"C:\Projects\Shot")


@pytest.mark.parametrize("name, problem", [
    ("frame_0001.png", None), ("shot.0001.exr", None), ("Zoë 渲染 frame.png", None), ("CONSOLE.png", None),
    ("CON", "device name CON"), ("con.png", "device name CON"), ("NUL.tar.gz", "device name NUL"),
    ("Com1.png", "device name COM1"), ("lpt9.exr", "device name LPT9"), ("COM\u00b9.png", "device name COM\u00b9"),
    ("AUX .png", "device name AUX"), ("frame_0001.", "ends with a dot"), ("frame_0001 ", "ends with a space"),
    ("shot 12:30.png", "contains ':'"), ('a"b?.png', "contains '\"' '?'"), ("a\tb.png", "contains '\\t'"),
    ("", "is not a file name"), ("..", "is not a file name"),
])
def test_names_windows_refuses(name, problem):
    found = os_rules.name_problem(name)
    assert (found is None) if problem is None else (problem in found and "\n" not in found), found


def test_the_engine_refuses_to_write_a_name_windows_cannot_hold_and_writes_nothing(tmp_path):
    with pytest.raises(EngineError, match="device name AUX, which Windows reserves"):
        with files.atomic_write(tmp_path / "aux.png") as tmp:
            tmp.write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def win_error(code: int) -> PermissionError:
    error = PermissionError(errno.EACCES, "Access is denied")
    error.winerror = code
    return error


def test_replace_waits_while_windows_has_the_target_open():
    calls, slept = [], []

    def replace(source, target):
        calls.append((source, target))
        if len(calls) < 4:
            raise win_error(32)  # ERROR_SHARING_VIOLATION: an image viewer has frame_0001.png open

    os_rules.replace_file("a.partial", "frame_0001.png", "windows", replace=replace, sleep=slept.append)
    assert len(calls) == 4 and slept == pytest.approx([0.05, 0.1, 0.15])


def test_replace_gives_up_with_one_sentence_naming_the_file():
    def replace(source, target):
        raise win_error(5)

    with pytest.raises(os_rules.FileInUseError) as failed:
        os_rules.replace_file("a.partial", r"C:\shot\frame_0001.png", "windows", replace=replace, sleep=lambda s: None)
    assert str(failed.value) == (r"cannot replace C:\shot\frame_0001.png: another program has it open (close it "
                                 "there and try again)")
    assert isinstance(failed.value, PermissionError)


@pytest.mark.parametrize("system", ["linux", "macos"])
def test_replace_never_waits_where_readers_cannot_block_it(system):
    calls = []

    def replace(source, target):
        calls.append(target)
        raise PermissionError(errno.EACCES, "Permission denied")  # a real permission problem: say it at once

    with pytest.raises(PermissionError):
        os_rules.replace_file("a", "b", system, replace=replace, sleep=lambda s: pytest.fail("waited"))
    assert len(calls) == 1


def test_replace_file_over_an_open_file_here(tmp_path):
    target, source = tmp_path / "frame.png", tmp_path / "frame.partial"
    target.write_bytes(b"old")
    source.write_bytes(b"new")
    with open(target, "rb"):  # POSIX lets a reader keep the old file
        os_rules.replace_file(source, target)
    assert target.read_bytes() == b"new" and not source.exists()


def test_swap_folder_replaces_the_whole_folder_and_keeps_it_on_failure(tmp_path):
    target, new = tmp_path / "site-packages", tmp_path / "site-packages.partial"
    (target / "nvidia").mkdir(parents=True)  # a package of the previous set
    (new / "torch").mkdir(parents=True)
    old = os_rules.swap_folder(str(new), str(target))
    assert sorted(p.name for p in target.iterdir()) == ["torch"] and not new.exists()
    assert os_rules.remove_tree(old) and not Path(old).exists()
    calls = []

    def locked(source, destination):
        calls.append(destination)
        if destination == str(target):
            raise win_error(32)  # Windows: a virus scanner still holds the folder being put in place
        os.replace(source, destination)

    (new / "onnx").mkdir(parents=True)
    with pytest.raises(os_rules.FileInUseError):
        os_rules.swap_folder(str(new), str(target), "windows", replace=locked, sleep=lambda s: None)
    assert sorted(p.name for p in target.iterdir()) == ["torch"]  # the working folder is back in place


def test_processes_are_started_without_a_console_window_on_windows_only(tmp_path):
    assert os_rules.popen_options("windows") == {"creationflags": 0x08000000}
    assert os_rules.popen_options("linux") == {} and os_rules.popen_options("macos") == {}
    env = os_rules.child_env({"PATH": "/bin"})
    assert env["PYTHONUTF8"] == "1" and env["PYTHONIOENCODING"] == "utf-8" and env["PATH"] == "/bin"
    # A folder in the temp folder the worker runs in (as Ray's /tmp/ray where Ray is not installed) is no module.
    (tmp_path / "not_installed_anywhere").mkdir()
    imported = [sys.executable, "-c", "import not_installed_anywhere"]
    shadowed = subprocess.run(imported, cwd=tmp_path, env={**os.environ, "PYTHONSAFEPATH": ""}, capture_output=True)
    safe = subprocess.run(imported, cwd=tmp_path, env=os_rules.child_env(dict(os.environ)), capture_output=True)
    assert shadowed.returncode == 0 and safe.returncode == 1 and b"ModuleNotFoundError" in safe.stderr


@pytest.mark.parametrize("executable, resources, system, expected", [
    (r"C:\Program Files\Blender Foundation\Blender 4.2\4.2\python\bin\python.exe",
     r"C:\Program Files\Blender Foundation\Blender 4.2\4.2", "windows",
     r"C:\Program Files\Blender Foundation\Blender 4.2\4.2\python\bin\python.exe"),
    (r"C:\Program Files\Blender Foundation\Blender 4.2\blender.exe",
     r"C:\Program Files\Blender Foundation\Blender 4.2\4.2", "windows",
     r"C:\Program Files\Blender Foundation\Blender 4.2\4.2\python\bin\python.exe"),
    ("/Applications/Blender.app/Contents/MacOS/Blender", "/Applications/Blender.app/Contents/Resources/4.2", "macos",
     "/Applications/Blender.app/Contents/Resources/4.2/python/bin/python3.11"),
    ("/opt/blender-4.2.0-linux-x64/blender", "/opt/blender-4.2.0-linux-x64/4.2", "linux",
     "/opt/blender-4.2.0-linux-x64/4.2/python/bin/python3.11"),
    ("/home/zoë/venv/bin/python", "/home/zoë/venv/lib/python3.11/site-packages/bpy/5.0", "linux",
     "/home/zoë/venv/bin/python"),  # the bpy module: the virtualenv's own Python
])
def test_blenders_python_on_each_system(executable, resources, system, expected):
    assert os_rules.blender_python(executable, resources, system, (3, 11)) == expected


def test_protocol_lines_end_in_a_bare_newline_and_readers_accept_windows_endings():
    line = os_rules.protocol_line({"cmd": "stylize", "content": "C:\\Users\\Zoë\\渲染\\in.npy"})
    assert line.endswith(b"}\n") and not line.endswith(b"\r\n") and line.isascii()
    assert json.loads(os_rules.read_protocol_line(line.replace(b"\n", b"\r\n")))["content"].endswith("渲染\\in.npy")
    from engine.worker import parse

    assert parse(b'{"cmd": "ping", "id": 1}\r\n') == ("ping", {"id": 1})


def _child_start_method(queue) -> None:
    queue.put(multiprocessing.get_start_method())


def test_use_spawn_makes_children_fresh_interpreters():
    code = ("import multiprocessing as mp; from engine import os_rules; import tests.test_os_rules as t\n"
            "print(os_rules.use_spawn())\n"
            "if __name__ == '__main__':\n"
            "    q = mp.Queue(); p = mp.Process(target=t._child_start_method, args=(q,)); p.start(); p.join(60)\n"
            "    print(q.get(timeout=60), p.exitcode)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.split()[-3:] == ["spawn", "spawn", "0"], done.stdout + done.stderr


@pytest.fixture(scope="module")
def awkward_root(tmp_path_factory) -> Path:
    """The engine copied where Windows and macOS users keep things: spaces and non-ASCII in every part."""
    root = tmp_path_factory.mktemp("paths") / "Blender Foundation" / "Zoë's 渲染 (v2)"
    shutil.copytree(ROOT / "engine", root / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_worker_starts_with_spawn_from_an_awkward_path_and_runs_a_job(awkward_root):
    from neural_style_addon.worker_client import WorkerClient, WorkerConfig

    work = awkward_root / "work dir ü"
    work.mkdir()
    rng = np.random.default_rng(0)
    np.save(work / "content ü.npy", rng.random((16, 16, 3), dtype=np.float32))
    np.save(work / "style 渲染.npy", rng.random((16, 16, 3), dtype=np.float32))
    client = WorkerClient(WorkerConfig(sys.executable, (str(awkward_root),)))
    try:
        ready = client.next_event(120)
        assert ready["event"] == "ready" and ready["start_method"] == "spawn", ready
        client.send({"cmd": "stylize", "id": "ü", "content": str(work / "content ü.npy"),
                     "styles": [str(work / "style 渲染.npy")], "output": str(work / "out 渲染.npy"),
                     "options": {"weights": "random", "size": 16, "iterations": 1, "device": "cpu"}})
        while (event := client.next_event(120))["event"] not in ("done", "error", "exit"):
            pass
        assert event["event"] == "done" and event["id"] == "ü", (event, list(client.stderr_tail))
        assert np.load(work / "out 渲染.npy").shape == (16, 16, 3)
        client.send({"cmd": "stylize", "id": 2, "content": str(work / "content ü.npy"),
                     "styles": [str(work / "style 渲染.npy")], "output": str(work / "CON.npy")})
        event = client.next_event(60)
        assert event["event"] == "error" and "device name CON" in event["message"], event
    finally:
        client.close()
