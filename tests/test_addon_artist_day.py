"""An artist's day, end to end, as a new user meets it (issue 10's "done when").

The extension zip, built with Blender's own tool, is installed into a fresh
`BLENDER_USER_RESOURCES` by a separate Blender process; its worker is a Python
that has nothing installed, so the engine's packages come only from the
add-on's own *Install Dependencies* (into the extension's user folder).  Then:
a scene that already has a Video Sequencer strip -> Stylize Animation over
three frames with temporal coherence and *Add Sequencer Strip* -> the scene
still renders the 3D scene -> a rerun with another style stylizes again ->
one strip and one image.  Tiny sizes throughout (48x32, 3 iterations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import addon_support as support
import numpy as np
import pytest

from neural_style_addon import image_bridge
from addon_support import torch_index  # noqa: F401 - fixture: where Install Dependencies gets the CPU torch
from test_addon_extension import package  # noqa: F401 - fixture: the built zip

DAY = r"""
import json, os, sys
import bpy
import numpy as np

zip_path, out_dir, style_a, style_b, worker_python, torch_index = sys.argv[1:7]
report = {}
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.neural_style"
addon = sys.modules[module + ".neural_style_addon"]
prefs = bpy.context.preferences.addons[module].preferences
prefs.python_path = worker_python
prefs.torch_index = torch_index  # where this machine's CPU torch comes from (a local mirror of the PyTorch index)

# Install Dependencies: the add-on's own installer fills the extension's user folder (from PyPI: online).
bpy.context.preferences.system.use_online_access = True
addon.preferences.install_dependencies().wait()
report["site_packages"] = addon.preferences.site_packages()

scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 2, False
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 48, 32, 100
scene.frame_start, scene.frame_end = 1, 3
cube = bpy.data.objects["Cube"]
for frame, x in ((1, -1.0), (3, 1.0)):
    cube.location.x = x
    cube.keyframe_insert("location", index=0, frame=frame)
# The artist's edit: a colour strip in the scene's Video Sequencer (so F12 shows the edit).
editor = scene.sequence_editor_create()
edit = editor.strips.new_effect("Edit", "COLOR", 1, frame_start=1, length=3)
edit.color = (1.0, 0.0, 0.0)

def render(path):
    bpy.ops.render.render()
    bpy.data.images["Render Result"].save_render(path, scene=scene)
    image = bpy.data.images.load(path, check_existing=False)
    pixels = np.array(image.pixels[:]).reshape(32, 48, -1)
    bpy.data.images.remove(image)
    return pixels

before = render(os.path.join(out_dir, "before.png"))

settings = scene.neural_style
settings.styles.add().filepath = style_a
settings.quality = "CUSTOM"
settings.size, settings.iterations, settings.seed = 48, 3, 0
settings.strength = 20.0  # so three iterations already show the style
settings.animation_dir = os.path.join(out_dir, "stylized")
settings.temporal = True
settings.add_strip = True

def frames():
    folder = settings.animation_dir
    return [np.array(load(os.path.join(folder, f"frame_{f:04d}.png"))) for f in (1, 2, 3)]

def load(path):
    image = bpy.data.images.load(path, check_existing=False)
    pixels = np.array(image.pixels[:]).reshape(image.size[1], image.size[0], -1)
    bpy.data.images.remove(image)
    return pixels

report["first_run"] = sorted(bpy.ops.image.neural_style_animation())
first = frames()
report["frames_differ"] = float(np.abs(first[0] - first[2]).max())
report["frame_spread"] = float(first[0][..., :3].std())
report["motion_files"] = sorted(os.listdir(os.path.join(settings.animation_dir, ".motion")))
report["use_sequencer"] = scene.render.use_sequencer
report["scene_strips"] = sorted(strip.name for strip in editor.strips_all)
after = render(os.path.join(out_dir, "after.png"))
report["render_unchanged"] = float(np.abs(after - before).max())

settings.styles[0].filepath = style_b
report["second_run"] = sorted(bpy.ops.image.neural_style_animation())
second = frames()
report["restyled"] = float(min(np.abs(a - b).mean() for a, b in zip(first, second)))
report["scene_strips_after"] = sorted(strip.name for strip in editor.strips_all)
stylized = [s for s in bpy.data.scenes if s != scene]
report["stylized_scenes"] = [s.name for s in stylized]
report["stylized_strips"] = [len(s.sequence_editor.strips_all) for s in stylized if s.sequence_editor]
report["sequence_images"] = sorted(i.name for i in bpy.data.images if i.source == "SEQUENCE")
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A Python with nothing installed but pip: a fresh venv without system site-packages."""
    folder = tmp_path_factory.mktemp("bare-python")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(folder)
    python = folder / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import numpy"], capture_output=True)
    assert done.returncode != 0, "the worker's Python must start with nothing installed"
    return str(python)


def test_an_artists_day(package, bare_python, torch_index, tmp_path):  # noqa: F811 - pytest fixtures
    style_a = support.write_style(tmp_path / "waves.png")
    style_b = tmp_path / "dots.png"  # another style: dark dots on yellow instead of colour waves
    y, x = np.mgrid[0:32, 0:32]
    dots = ((x % 8 - 4) ** 2 + (y % 8 - 4) ** 2 < 6).astype(np.float32)[..., None]
    image_bridge.save_png(np.concatenate([1 - dots, 0.9 - 0.8 * dots, 0.1 + 0 * dots, 1 + 0 * dots], -1), str(style_b))
    env = {**os.environ, "BLENDER_USER_RESOURCES": tempfile.mkdtemp(prefix="neural-style-day-")}
    done = subprocess.run(
        [sys.executable, "-c", DAY, str(package), str(tmp_path), str(style_a), str(style_b), bare_python, torch_index],
        capture_output=True, text=True, env=env, timeout=900, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(lines[0][len("REPORT "):])

    assert report["site_packages"].startswith(env["BLENDER_USER_RESOURCES"])
    assert report["first_run"] == ["FINISHED"]
    # Stylized from the 3D scene (the cube moves), not from the flat colour strip.
    assert report["frames_differ"] > 0.05 and report["frame_spread"] > 0.02
    assert report["motion_files"] == ["frame_0001.exr", "frame_0002.exr", "frame_0003.exr"]
    # The scene renders exactly what it rendered before: its settings and strips are the artist's.
    assert report["use_sequencer"] and report["render_unchanged"] < 1e-6
    assert report["scene_strips"] == report["scene_strips_after"] == ["Edit"]
    # The rerun with another style made new frames (reused ones would not differ at all: 3 iterations at 48 px move
    # every frame by 0.0076 in bf16, the default on this CPU); one stylized scene, one strip, one image.
    assert report["second_run"] == ["FINISHED"] and report["restyled"] > 0.004
    assert report["stylized_scenes"] == ["Scene Stylized"] and report["stylized_strips"] == [1]
    assert len(report["sequence_images"]) == 1
