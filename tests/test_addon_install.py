"""Install Dependencies, the way a user meets it.

The extension zip is built with Blender's own tool (from a copy of this tree
with stray files beside it, as a fresh clone has after the README's demo),
installed into a fresh `BLENDER_USER_RESOURCES` by a separate Blender process,
and the add-on's Worker Python is pointed at a bare venv (`python -m venv`,
nothing installed).  The add-on's installer then picks this machine's package
set (Linux x64 without an NVIDIA driver: CPU only), installs its lock file with
pip (torch from the PyTorch CPU index, here a local mirror of it holding the CPU
wheel pip is configured with, the rest from PyPI), with the set's cluster lock
(Ray) because a Ray Cluster is set, checks that the worker imports everything,
puts the folder in place, and a real stylize job runs with only that; Stylize
Animation then meets the Ray Cluster through that Ray, and, with Ray moved out
of the folder, says to Install Dependencies.  The refusals run in this process:
online access off, a pip that fails, a cancel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import addon_support as support
import pytest
from scripts import lock

import bpy
from addon_support import torch_index  # noqa: F401 - fixture: where Install Dependencies gets the CPU torch
from engine import environment
from neural_style_addon import dependencies, package_sets, preferences
from neural_style_addon.errors import StyleError
from neural_style_addon.worker_client import WorkerConfig

ROOT = support.ROOT
BLENDER_EXT = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
SOURCE_IGNORED = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", "*.egg-info", "out", "dist",
                                        "build")

INSTALL_AND_STYLIZE = r"""
import json, os, socket, sys, time
import bpy
import numpy as np

zip_path, style_path, worker_python, torch_index = sys.argv[1:5]
with socket.socket() as sock:  # a port nothing listens on: the Ray Cluster's address
    sock.bind(("127.0.0.1", 0))
    ray_address = "127.0.0.1:%d" % sock.getsockname()[1]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.neural_style"
addon = sys.modules[module + ".neural_style_addon"]
prefs = bpy.context.preferences.addons[module].preferences
prefs.python_path = worker_python
prefs.torch_index = torch_index
prefs.ray_address = ray_address  # Install Dependencies adds Ray
bpy.context.preferences.system.use_online_access = True  # Install Dependencies downloads from PyPI
report = {"site_packages": addon.preferences.site_packages(), "plan": addon.preferences.package_choice().reason,
          "ray_address": ray_address}

start = time.monotonic()
install = addon.preferences.install_dependencies()
seen = []
while not install.finished:  # what the modal operator shows, sampled the same way
    if not seen or seen[-1] != install.status.text:
        seen.append(install.status.text)
    time.sleep(0.25)
seen.append(install.status.text)
report["modules"] = install.wait()
report["install_seconds"] = round(time.monotonic() - start, 1)
report["statuses"] = seen
report["command"] = install.command
report["worker_python"] = addon.preferences.worker_config().python
report["installed"] = sorted(os.listdir(os.path.dirname(report["site_packages"])))
report["probe"] = addon.dependencies.check(addon.preferences.worker_config())["build"]

# A real job on the installed packages: packaged VGG-16 weights, a tiny image.
y, x = np.mgrid[0:24, 0:32] / 32.0
pixels = np.stack([x, y, 0.5 + 0 * x, 1 + 0 * x], -1).astype(np.float32)
photo = bpy.data.images.new("photo", 32, 24)
photo.pixels.foreach_set(pixels.ravel())
result = addon.api.stylize_image([style_path], source="IMAGE", image=photo,
                                 options={"size": 32, "iterations": 3, "seed": 0})
out = np.empty(len(result.pixels), dtype=np.float32)
result.pixels.foreach_get(out)
report["result_size"] = list(result.size)
report["result_change"] = float(np.abs(out.reshape(24, 32, 4)[..., :3] - pixels[..., :3]).mean())

# Stylize Animation with the Ray Cluster: the worker joins it before rendering anything.
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.frame_start = scene.frame_end = 1
scene.neural_style.styles.add().filepath = style_path
frames = os.path.join(os.getcwd(), "frames")


def cluster_error():
    try:
        addon.api.stylize_animation(out_dir=frames, scene=scene)
    except Exception as exc:  # the add-on's StyleError
        return str(exc)
    return "no error"


ray = os.path.join(report["site_packages"], "ray")
os.rename(ray, ray + ".moved")  # as if the Ray Cluster had been set after Install Dependencies
report["without_ray"] = cluster_error()
os.rename(ray + ".moved", ray)
report["with_ray"] = cluster_error()
report["rendered"] = os.path.exists(os.path.join(frames, ".shot"))
report["extension_root"] = addon.preferences.EXTENSION_ROOT
print("REPORT " + json.dumps(report))
"""


def blender_ext(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BLENDER_EXT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The zip, built from a copy of this tree that holds what a fresh clone holds after the README's demo
    and a bit of work: a demo output, notes, a stray script and renders at the top level."""
    source = tmp_path_factory.mktemp("clone") / "neural-style"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORED)
    support.write_style(source / "stylized.png")
    (source / "out").mkdir()
    support.write_style(source / "out" / "stylized.png")
    (source / "notes.txt").write_text("todo\n")
    (source / "scratch.py").write_text("print('hi')\n")
    (source / "renders").mkdir()
    support.write_style(source / "renders" / "frame_0001.png")
    out = tmp_path_factory.mktemp("build") / "neural_style.zip"
    done = blender_ext("build", "--source-dir", str(source), "--output-filepath", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A venv with nothing but pip: the worker's packages can only come from Install Dependencies."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = str(folder / "bin" / "python")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, timeout=120)
    assert {item["name"] for item in json.loads(listed.stdout)} <= {"pip", "setuptools"}
    return python


def test_zip_leaves_out_stray_files_and_carries_the_requirements(package):
    names = zipfile.ZipFile(package).namelist()
    assert {name.split("/")[0] for name in names} == {"blender_manifest.toml", "__init__.py", "neural_style_addon", "engine"}
    assert {"engine/requirements.txt", "engine/constraints.txt", "neural_style_addon/dependencies.py",
            "engine/locks/sets.toml", "engine/os_rules.py"} <= set(names)
    assert {f"engine/locks/{name}.txt" for name in package_sets.load()} <= set(names)


def test_install_dependencies_into_a_bare_python_then_stylize(package, bare_python, torch_index, tmp_path):
    style = support.write_style(tmp_path / "style.png")
    env = {**os.environ, "BLENDER_USER_RESOURCES": tempfile.mkdtemp(prefix="neural-style-install-")}
    done = subprocess.run([sys.executable, "-c", INSTALL_AND_STYLIZE, str(package), str(style), bare_python, torch_index],
                          capture_output=True, text=True, env=env, timeout=1200, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    print(f"Install Dependencies took {report['install_seconds']} s")
    site = report["site_packages"]
    # Into the extension's user folder of the fresh user resources, with the worker's (bare) Python: the lock of
    # this machine's set, staged beside site-packages and then put in its place.
    command = report["command"]
    assert site.startswith(env["BLENDER_USER_RESOURCES"]) and "extensions" in site
    assert command[0] == bare_python and command[command.index("--target") + 1] == site + ".partial"
    assert report["plan"] == "no NVIDIA GPU found: CPU only"
    locks = [Path(command[at + 1]).name for at, argument in enumerate(command) if argument == "-r"]
    assert locks == ["linux-x64-cpu.txt", "linux-x64-cpu-cluster.txt"] and "--no-deps" in command  # Ray Cluster set
    index = torch_index or package_sets.TORCH_INDEX
    assert command[command.index("--extra-index-url") + 1] == index.rstrip("/") + "/cpu"
    assert os.path.isdir(os.path.join(site, "torch")) and os.path.isdir(os.path.join(site, "cv2"))
    assert not os.path.isdir(os.path.join(site, "nvidia"))  # the CPU-only torch, not PyPI's CUDA build
    assert report["installed"] == ["site-packages"]  # no staging or old folder left
    assert report["worker_python"] == bare_python
    # The worker imported everything, the lazily imported fast-mode and temporal packages included.
    assert {"torch", "numpy", "PIL", "cv2", "OpenEXR", "onnxruntime", "onnx", "tqdm"} <= set(report["modules"])
    assert report["modules"]["torch"] == lock.torch_pin() + "+cpu"  # the lock's build of the tested pin
    assert report["modules"]["ray"] == package_sets.locked_version(str(ROOT / "engine" / "constraints.txt"), "ray")
    packages = sum(len(dependencies.requirement_lines(str(ROOT / "engine" / "locks" / name))) for name in locks)
    assert any(text.startswith("collecting") and f" of {packages} packages" in text for text in report["statuses"])
    assert report["statuses"][-1].endswith("packages import; Installed: torch 2.13.0, CPU only")
    assert package_sets.describe_build(report["probe"]) == "Installed: torch 2.13.0, CPU only"
    # The job ran on the bare Python plus the installed folder.
    assert report["result_size"] == [32, 24] and report["result_change"] > 0.01
    # The Ray Cluster, before any frame is rendered: with the installed Ray, the engine's check of the address;
    # without it, the add-on's way to get it (not a pip command an artist cannot run).
    assert environment.in_blender_extension(Path(report["extension_root"]))
    assert report["without_ray"] == str(environment.ray_missing(Path(report["extension_root"])))
    assert "Install Dependencies" in report["without_ray"] and "pip" not in report["without_ray"]
    assert report["with_ray"].startswith(f"nothing listens at {report['ray_address']} (connection refused)")
    assert not report["rendered"]
    # The bare venv itself is still bare.
    assert subprocess.run([bare_python, "-c", "import torch"], capture_output=True, timeout=120).returncode != 0


def test_the_plan_adds_ray_while_a_ray_cluster_is_set(monkeypatch):
    """The preferences' one-line plan and Install Dependencies' pip command follow the Ray Cluster preference, and
    a Ray Cluster set where the worker has no Ray says so under it (with Ray installed, nothing more is said)."""
    from test_addon_ui import draw_preferences

    chosen = package_sets.for_this_machine().package_set  # asked now: drawing then finds it known
    probed = dependencies.Probe(True, "Installed: torch 2.13.0, CPU only", {"torch": "2.13.0+cpu"})
    monkeypatch.setattr(dependencies, "probe", lambda config: probed)
    for address, locks in (("", [chosen.lock]), ("head:6379", [chosen.lock, chosen.cluster_lock])):
        monkeypatch.setattr(preferences, "ray_address", lambda context=None, address=address: address)
        command = preferences.install_command()
        assert [command[at + 1] for at, argument in enumerate(command) if argument == "-r"] == locks
        labels = draw_preferences(address).names("label")
        assert package_sets.plan(package_sets.for_this_machine(), cluster=bool(address)) in labels
        assert ("Ray is not installed for the worker: click Install Dependencies to add it" in labels) == bool(address)
    monkeypatch.setattr(dependencies, "probe", lambda config: dependencies.Probe(True, probed.text, {"ray": "2.60.0"}))
    assert not any(label.startswith("Ray is not installed") for label in draw_preferences("head:6379").names("label"))


def test_online_access_off_refuses_in_one_sentence_and_installs_nothing():
    assert bpy.app.online_access is False  # the bpy module's default
    before = os.path.exists(preferences.site_packages())
    with pytest.raises(StyleError) as refused:
        preferences.install_dependencies()
    message = str(refused.value)
    assert message == dependencies.OFFLINE and "\n" not in message and ". " not in message
    assert "Allow Online Access" in message
    assert os.path.exists(preferences.site_packages()) == before
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.neural_style.install_dependencies()


def test_a_failing_pip_says_what_failed_and_changes_nothing(tmp_path):
    target = tmp_path / "site-packages"
    target.mkdir()
    (target / "kept.txt").write_text("from an earlier install")
    (tmp_path / "lock.txt").write_text("# a lock\ntqdm==0.0.1\n")  # no such release
    install = dependencies.Install(WorkerConfig(sys.executable, ()), str(target), [str(tmp_path / "lock.txt")],
                                   online=True)
    with pytest.raises(dependencies.DependencyError) as failed:
        install.wait()
    message = str(failed.value)
    assert message.startswith("pip failed (exit code 1): ") and "tqdm==0.0.1" in message, message
    assert "\n" not in message
    assert [path.name for path in target.iterdir()] == ["kept.txt"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith("site-packages")] == ["site-packages"]


def test_pip_failure_picks_the_line_that_says_what_went_wrong():
    output = ["Collecting torch==2.13.0", "ERROR: Cannot install torch==2.13.0 because these package versions have "
              "conflicting dependencies.", "", "The conflict is caused by:", "    numpy<1",
              "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution"]
    assert dependencies.pip_failure(output) == ("Cannot install torch==2.13.0 because these package versions have "
                                                "conflicting dependencies: numpy<1")
    assert dependencies.pip_failure(["Collecting x", "Killed", ""]) == "Killed"


def test_cancel_kills_pip_and_leaves_the_folder_as_it_was(tmp_path):
    target = tmp_path / "site-packages"
    locks = package_sets.for_this_machine().package_set.locks()
    install = dependencies.Install(WorkerConfig(sys.executable, ()), str(target), locks, online=True)
    deadline = time.monotonic() + 120
    while not install.status.text.startswith("collecting") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert install._process is not None, install.status.text
    install.cancel()
    with pytest.raises(dependencies.DependencyError, match="cancelled"):
        install.wait()
    assert install._process.poll() is not None  # pip is gone
    assert not target.exists() and not Path(install.staging).exists()


def test_the_worker_check_names_a_missing_package(tmp_path):
    """The check the installer ends with, against an engine that needs one package more than this Python has."""
    shutil.copytree(ROOT / "engine", tmp_path / "engine", ignore=SOURCE_IGNORED)
    with open(tmp_path / "engine" / "requirements.txt", "a") as fh:
        fh.write("# A package nobody has.\nno-such-package-for-neural-style\n")
    with pytest.raises(dependencies.DependencyError) as failed:
        dependencies.check(WorkerConfig(sys.executable, (str(tmp_path),)), timeout=120)
    assert str(failed.value).startswith("the Python running the engine lacks no-such-package-for-neural-style")
    assert dependencies.check(WorkerConfig(sys.executable, (str(ROOT),)), timeout=120)["modules"]["cv2"]
