"""Imported first by every tests/test_addon_*.py: a throw-away Blender user folder, then bpy and the add-on.

BLENDER_USER_RESOURCES is set before bpy is imported, so the tests never read
or write a real user's preferences or extensions.  The add-on is imported as
the plain package `neural_style_addon` and registered once per test process.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="neural-style-blender-user-"))
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import neural_style_addon  # noqa: E402
from neural_style_addon import package_sets  # noqa: E402
from scripts import lock  # noqa: E402

if not hasattr(bpy.types.Scene, "neural_style"):
    neural_style_addon.register()

# Plumbing-only runs: random network weights, tiny images, few iterations.
PLUMBING = {"weights": "random", "size": 32, "iterations": 2}


def fresh_scene(resolution=(32, 24), transparent=True) -> bpy.types.Scene:
    """Factory startup file (cube, light, camera), set up for a tiny, fast Cycles render."""
    bpy.ops.wm.read_factory_settings(use_empty=False)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 2
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = transparent
    scene.neural_style.model = "vgg16"
    return scene


def plumbing_settings(scene, style_path) -> None:
    """Scene settings for a fast run with random weights (tests that check plumbing, not looks)."""
    settings = scene.neural_style
    settings.weights = PLUMBING["weights"]
    settings.size = PLUMBING["size"]
    settings.iterations = PLUMBING["iterations"]
    settings.styles.clear()
    settings.styles.add().filepath = str(style_path)


def write_style(path: Path, size=(40, 40)) -> Path:
    """A striped, colourful style image (PNG through Blender, so no extra dependency)."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    rgba = np.stack([0.5 + 0.5 * np.sin(x * 20), 0.5 + 0.5 * np.cos(y * 13), (x + y) / 2, np.ones_like(x)], -1)
    from neural_style_addon import image_bridge

    image_bridge.save_png(rgba.astype(np.float32), str(path))
    return path


@pytest.fixture()
def style(tmp_path) -> Path:
    """A style image file (import this fixture into a test module to use it)."""
    return write_style(tmp_path / "waves.png")


@pytest.fixture()
def plumbing_scene(style) -> bpy.types.Scene:
    """A fresh scene with a render and settings for a fast random-weights run."""
    scene = fresh_scene()
    bpy.ops.render.render()
    plumbing_settings(scene, style)
    return scene


def pixels(image: bpy.types.Image) -> np.ndarray:
    flat = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(flat)
    return flat.reshape(image.size[1], image.size[0], -1)


def image_names() -> set[str]:
    return {image.name for image in bpy.data.images}


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory) -> str:
    """Where Install Dependencies gets the CPU-only torch: the PyTorch index where it can be reached, else a local
    mirror of it (a PEP 503 page, as a studio's mirror would serve) holding the CPU wheel pip is configured with."""
    if lock.reachable(package_sets.TORCH_INDEX + "/cpu/torch/"):
        return ""
    version = lock.torch_pin() + "+cpu"
    wheels = [wheel for folder in lock.local_wheel_dirs() for wheel in Path(folder).glob(f"torch-{version}-cp311-*.whl")]
    if not wheels:
        pytest.skip(f"torch {version} is neither on {package_sets.TORCH_INDEX} (not reachable) nor in pip's local wheels")
    root = tmp_path_factory.mktemp("torch-index")
    (root / "cpu" / "torch").mkdir(parents=True)
    (root / "cpu" / "torch" / "index.html").write_text(f'<a href="{wheels[0].as_uri()}">{wheels[0].name}</a>\n')
    return root.as_uri()
