"""The add-on's package sets resolve, for every platform the extension claims, to binary wheels, and the committed
lock files are exactly those resolutions (engine/locks/, written by scripts/lock.py).

uv evaluates environment markers for the target platform (pip --platform evaluates them for this machine), so
Windows x64, macOS arm64 (at the macOS version torch's wheels need) and Linux x64 all resolve here, with Python
3.11, Blender 4.2 to 5.0's.  This needs PyPI (uv's cache makes a rerun take about a second a set).  Each is
resolved with the committed versions pinned, so the test says whether every lock is still a whole resolution for
its platform (nothing missing, nothing extra, every pin installable there), not whether PyPI has released
something since: that is `scripts/lock.py`'s to follow, run by a person.  A torch build that only the PyTorch
index has (Linux CPU-only, Windows CUDA) is resolved from that index, or from local wheels pip is configured
with, or, where the set says its dependencies are PyPI's torch's, with PyPI's torch.
Each set's cluster lock (Ray, which Install Dependencies adds where a Ray Cluster is set) is resolved the same way,
together with the set, and holds only what the set's lock does not pin.
"""

from __future__ import annotations

import functools
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from neural_style_addon import dependencies, package_sets
from scripts import lock

ROOT = Path(__file__).resolve().parents[1]
SETS = package_sets.load()
# The environment markers of each platform's Python (PEP 508 variables engine/requirements.txt may use).
MARKERS = {
    "windows-x64": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64", "os_name": "nt"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                    "os_name": "posix"},
    "linux-x64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"},
}


@functools.cache
def resolved(name: str) -> lock.Resolution:
    """A set resolved now at its committed versions (once per test run: the cluster lock's test needs it too)."""
    try:
        return lock.resolve(SETS[name], pins=tuple(dependencies.requirement_lines(SETS[name].lock)))
    except lock.Unavailable as exc:
        pytest.skip(f"{name} cannot be resolved from this machine: {exc}")


def locked(path: str) -> dict[str, str]:
    """Normalised name -> version of every package a lock pins."""
    return {Requirement(line).name.lower(): line.split("==")[1] for line in dependencies.requirement_lines(path)}


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_set_resolves_to_its_committed_lock(name):
    item = SETS[name]
    found = resolved(name)
    assert found.lines == dependencies.requirement_lines(item.lock), (
        f"engine/locks/{name}.txt no longer resolves as committed: run `.venv/bin/python scripts/lock.py {name}`")
    assert all(size > 0 for size in found.sizes.values())


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_sets_cluster_lock_resolves_to_its_committed_lock(name):
    """Ray with the set, for the set's platform: what it adds to the set's lock, at the versions committed."""
    item = SETS[name]
    committed = dependencies.requirement_lines(item.lock) + dependencies.requirement_lines(item.cluster_lock)
    found = lock.resolve_cluster(item, resolved(name), pins=tuple(committed))
    assert found.lines == dependencies.requirement_lines(item.cluster_lock), (
        f"engine/locks/{name}-cluster.txt no longer resolves as committed: "
        f"run `.venv/bin/python scripts/lock.py {name}`")
    assert set(found.sizes) == {line.split("==")[0] for line in found.lines}  # every wheel's size is known
    assert package_sets.download_mb(item.cluster_lock) == round(sum(found.sizes.values()) / 1e6)


def pins() -> dict[str, str]:
    """engine/constraints.txt: normalised name -> the version tested."""
    return locked(str(ROOT / "engine" / "constraints.txt"))


def test_every_cluster_lock_adds_ray_at_its_pin_and_nothing_its_set_pins():
    """Offline: pip installs a set's lock and its cluster lock together with --no-deps, so they must not name one
    package twice; the cluster lock pins Ray (pyproject.toml's `cluster` extra) at engine/constraints.txt's version."""
    assert [Requirement(line).name for line in lock.extra_requirements(lock.CLUSTER_EXTRA)] == ["ray"]
    for item in SETS.values():
        base, cluster = locked(item.lock), locked(item.cluster_lock)
        assert cluster["ray"] == pins()["ray"], item.name
        assert not set(base) & set(cluster), (item.name, set(base) & set(cluster))
        assert item.locks() == [item.lock] and item.locks(cluster=True) == [item.lock, item.cluster_lock]


def test_every_lock_holds_the_requirements_that_apply_on_its_platform():
    """Offline: each requirement line whose marker holds on the platform is pinned in that platform's locks, at
    the version of engine/constraints.txt; a line that does not hold is absent (no onnxruntime-gpu on macOS)."""
    tested = pins()
    for item in SETS.values():
        versions = locked(item.lock)
        for line in dependencies.requirement_lines(str(ROOT / "engine" / "requirements.txt")):
            requirement = Requirement(line)
            name = requirement.name.lower()
            if requirement.marker is None or requirement.marker.evaluate(MARKERS[item.platform]):
                assert versions[name].split("+")[0] == tested[name], (item.name, name)
            else:
                assert name not in versions, (item.name, name)
        assert versions["torch"] == tested["torch"] + (f"+{item.torch_build}" if item.torch_build else "")


def test_the_manifest_lists_exactly_the_platforms_the_sets_serve():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert sorted(manifest["platforms"]) == package_sets.platforms() == ["linux-x64", "macos-arm64", "windows-x64"]
    assert set(MARKERS) == set(package_sets.platforms())


def test_the_engine_reads_the_markers_of_its_requirement_list():
    from engine.environment import requirement_names

    assert "onnxruntime" in requirement_names(environment=MARKERS["macos-arm64"])
    assert "onnxruntime-gpu" not in requirement_names(environment=MARKERS["macos-arm64"])
    assert "onnxruntime-gpu" in requirement_names(environment=MARKERS["windows-x64"])
    assert "onnxruntime" not in requirement_names()  # this machine: Linux


def test_the_engine_checks_ray_where_it_is_installed_and_says_how_to_get_it(tmp_path):
    """The worker's check imports an optional package (Ray) only where it is installed, as Install Dependencies
    puts it only while a Ray Cluster is set; without Ray, the extension's engine points at Install Dependencies and
    an engine from a source checkout at pip."""
    from engine import environment

    (tmp_path / "requirements.txt").write_text("# why\npackaging>=23\n")
    checked = environment.check_requirements(tmp_path / "requirements.txt")
    assert checked == {"packaging": pins()["packaging"], "ray": pins()["ray"]}  # this venv has the cluster extra
    assert environment.check_requirements(tmp_path / "requirements.txt", optional=("no-such-dist",)) == {
        "packaging": pins()["packaging"]}
    extension = tmp_path / "neural_style"
    (extension / "engine").mkdir(parents=True)
    (extension / "blender_manifest.toml").write_text('id = "neural_style"\n')
    assert environment.in_blender_extension(extension) and not environment.in_blender_extension(ROOT)
    assert str(environment.ray_missing(ROOT)) == "distributed runs need Ray: pip install 'neural-style-engine[cluster]'"
    message = str(environment.ray_missing(extension))
    assert "Install Dependencies" in message and "pip" not in message and "\n" not in message


def test_torch_builds_of_the_pytorch_index_are_there():
    """Only where download.pytorch.org can be reached (it cannot from the machine these locks were made on, which
    is said in those locks' header): the exact wheel each torch-index set installs is listed there."""
    indexed = [item for item in SETS.values() if item.torch_build]
    if not lock.reachable(package_sets.TORCH_INDEX + "/"):
        pytest.skip(f"{package_sets.TORCH_INDEX} cannot be reached from this machine: the torch builds of "
                    f"{', '.join(item.name for item in indexed)} are checked by their locks' resolution only")
    tags = {"linux-x64": "manylinux_2_28_x86_64", "windows-x64": "win_amd64"}
    for item in indexed:
        page = urllib.request.urlopen(f"{item.index_url()}/torch/", timeout=30).read().decode()
        version = lock.torch_pin() + "%2B" + item.torch_build
        assert f"torch-{version}-cp311-cp311-{tags[item.platform]}.whl" in page, item.name
