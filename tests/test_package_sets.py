"""Which package set Install Dependencies picks, for every kind of machine the extension claims, as pure functions
of the platform, the NVIDIA GPUs `nvidia-smi` reports and the macOS version; and the one line the preferences
show for what is installed."""

from __future__ import annotations

import threading
import time

import pytest

from neural_style_addon import package_sets
from neural_style_addon.package_sets import Gpu, choose, describe_build, parse_nvidia_smi

SETS = package_sets.load()
RTX_4090 = Gpu("NVIDIA GeForce RTX 4090", "580.82.07", 8.9)


@pytest.mark.parametrize("platform, gpus, macos, chosen, reason", [
    ("windows-x64", [RTX_4090], "", "windows-x64-cuda", "NVIDIA GeForce RTX 4090 (driver 580.82.07): torch for CUDA 13.0"),
    ("linux-x64", [RTX_4090], "", "linux-x64-cuda", "torch for CUDA 13.0"),
    ("windows-x64", [], "", "windows-x64-cpu", "no NVIDIA GPU found: CPU only"),
    ("linux-x64", [], "", "linux-x64-cpu", "no NVIDIA GPU found: CPU only"),
    ("windows-x64", [Gpu("NVIDIA GeForce RTX 3060", "552.44", 8.6)], "", "windows-x64-cpu",
     "the NVIDIA driver 552.44 is older than the 580 that CUDA 13.0 needs"),
    ("linux-x64", [Gpu("NVIDIA GeForce GTX 1080", "580.65.06", 6.1)], "", "linux-x64-cpu",
     "compute capability 6.1) is older than the GPUs CUDA 13.0 supports (7.5 and newer)"),
    ("linux-x64", [Gpu("NVIDIA GeForce GTX 1080", "580.65.06", 6.1), RTX_4090], "", "linux-x64-cuda",
     "NVIDIA GeForce RTX 4090"),  # the usable one of two
    ("linux-x64", [Gpu("Tesla T4", "590.10", None)], "", "linux-x64-cuda", "Tesla T4"),  # no compute_cap: trust it
    ("macos-arm64", [], "15.1", "macos-arm64", "Apple Silicon: torch with the Apple GPU (MPS)"),
    ("macos-arm64", [], "14.0", "macos-arm64", "Apple GPU"),
    ("macos-arm64", [], "13.6.1", None, "need macOS 14.0 or newer and this Mac runs macOS 13.6.1"),
    ("macos-x64", [], "14.2", None, "not on macos-x64 (on a Mac with Apple Silicon, use the Apple Silicon build"),
    ("linux-arm64", [], "", None, "runs on Windows x64, macOS on Apple Silicon and Linux x64, not on linux-arm64"),
])
def test_the_set_for_each_kind_of_machine(platform, gpus, macos, chosen, reason):
    found = choose(SETS, platform, gpus, macos)
    assert (found.package_set.name if found.package_set else None) == chosen
    assert reason in found.reason and "\n" not in found.reason, found.reason


def test_cpu_only_skips_the_gpu_set_when_asked():
    found = choose(SETS, "windows-x64", [RTX_4090], cpu_only=True)
    assert found.package_set.name == "windows-x64-cpu" and found.reason == "CPU only, as asked"


def test_the_sets_know_where_their_torch_comes_from():
    assert SETS["windows-x64-cuda"].index_url() == "https://download.pytorch.org/whl/cu130"
    assert SETS["linux-x64-cpu"].index_url("https://mirror.studio.lan/pytorch/") == "https://mirror.studio.lan/pytorch/cpu"
    assert SETS["linux-x64-cuda"].index_url() == "" and SETS["macos-arm64"].index_url() == ""
    assert {item.label for item in SETS.values()} == {"CUDA 13.0", "CPU only", "Apple GPU (MPS)"}


def test_every_set_has_its_lock_and_download_size():
    for item in SETS.values():
        size = package_sets.download_mb(item.lock)
        assert size and 100 < size < 5000, (item.name, size)


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_plan_says_the_set_ray_where_a_cluster_is_set_and_the_download(name):
    item = SETS[name]
    choice = package_sets.Choice(item, "why")
    base, cluster = package_sets.download_mb(item.lock), package_sets.download_mb(item.cluster_lock)
    assert cluster and 10 < cluster < 200, (name, cluster)  # Ray's wheel and its few dependencies
    assert package_sets.plan(choice) == f"Packages for this machine: why, about {base / 1000:.1f} GB to download"
    assert package_sets.plan(choice, cluster=True) == (f"Packages for this machine: why, and Ray 2.60.0 for the Ray "
                                                       f"Cluster, about {(base + cluster) / 1000:.1f} GB to download")
    assert package_sets.plan(package_sets.Choice(None, "not here"), cluster=True) == "not here"


def test_nvidia_smi_lines():
    text = "NVIDIA GeForce RTX 4090, 580.82.07, 8.9\nNVIDIA GeForce GTX 970, 470.256.02, [N/A]\n\ngarbage\n"
    assert parse_nvidia_smi(text) == [RTX_4090, Gpu("NVIDIA GeForce GTX 970", "470.256.02", None)]
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == []


def test_drawing_never_waits_for_nvidia_smi(monkeypatch):
    """The preferences ask without waiting: None while nvidia-smi answers on a thread, then the kept choice."""
    answer = threading.Event()
    monkeypatch.setattr(package_sets, "_choices", {})
    monkeypatch.setattr(package_sets, "_asking", set())
    monkeypatch.setattr(package_sets, "nvidia_gpus", lambda system=None: [RTX_4090] if answer.wait(30) else [])
    monkeypatch.setattr(package_sets.os_rules, "platform_tag", lambda: "linux-x64")
    monkeypatch.setattr(package_sets.os_rules, "system_name", lambda name=None: "linux")
    start = time.monotonic()
    assert package_sets.for_this_machine_soon() is None and package_sets.for_this_machine_soon() is None
    assert time.monotonic() - start < 0.5 and package_sets.asking()
    answer.set()
    deadline = time.monotonic() + 30
    while package_sets.asking() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert package_sets.for_this_machine_soon().package_set.name == "linux-x64-cuda"


def test_this_machine_has_no_nvidia_driver_so_it_gets_the_cpu_set():
    """The machine the tests run on (Linux x64 without an NVIDIA driver): what Install Dependencies installs here."""
    found = package_sets.for_this_machine()
    if package_sets.nvidia_gpus():
        pytest.skip("this machine has an NVIDIA driver")
    assert found.package_set is not None and found.package_set.gpu == "cpu", found.reason


@pytest.mark.parametrize("build, line", [
    ({"torch": "2.13.0+cu130", "cuda": "13.0", "gpu": "NVIDIA GeForce RTX 4090", "mps_built": False, "mps": False},
     "Installed: torch 2.13.0 CUDA 13.0 (NVIDIA GeForce RTX 4090)"),
    ({"torch": "2.13.0", "cuda": "13.0", "gpu": None, "mps_built": False, "mps": False},
     "Installed: torch 2.13.0 CUDA 13.0, but no NVIDIA GPU answers: CPU only"),
    ({"torch": "2.13.0", "cuda": None, "gpu": None, "mps_built": True, "mps": True},
     "Installed: torch 2.13.0, Apple GPU (MPS)"),
    ({"torch": "2.13.0", "cuda": None, "gpu": None, "mps_built": True, "mps": False},
     "Installed: torch 2.13.0, CPU only (the Apple GPU is not available to it)"),
    ({"torch": "2.13.0+cpu", "cuda": None, "gpu": None, "mps_built": False, "mps": False},
     "Installed: torch 2.13.0, CPU only"),
])
def test_the_installed_build_in_one_line(build, line):
    assert describe_build(build) == line


def test_the_engine_reports_this_machines_build():
    from engine.environment import torch_build

    build = torch_build()
    assert build["torch"].startswith("2.13.0") and describe_build(build).startswith("Installed: torch 2.13.0")
