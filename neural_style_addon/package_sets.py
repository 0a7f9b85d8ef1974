"""Which packages "Install Dependencies" installs on this machine: the package set for its platform and GPU.

The sets are data, `engine/locks/sets.toml` (one lock file each, resolved with uv by scripts/lock.py and
checked by tests/test_locks.py).  Here they are read and one is chosen from what the machine has:

- Windows x64 and Linux x64 with an NVIDIA GPU whose driver and architecture the set's CUDA build supports
  (asked of `nvidia-smi`, which every NVIDIA driver installs): the CUDA set;
- otherwise on those platforms: the CPU set;
- macOS on Apple Silicon: the one set, whose torch uses the Apple GPU (MPS), if macOS is recent enough;
- anything else: no set, and one sentence saying why.

Each set has a companion lock, `<set>-cluster.txt` (Ray and what it needs beyond the set's lock), that Install
Dependencies adds where the add-on's Ray Cluster is set (`PackageSet.locks`, `plan`).

Nothing here imports bpy or torch; `choose` is a pure function of the sets, the platform and the GPUs found,
so the Windows and macOS cases are tested on Linux (tests/test_package_sets.py).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import tomllib
from dataclasses import dataclass

from . import os_rules

LOCKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine", "locks")
SETS_FILE = os.path.join(LOCKS, "sets.toml")
# PyTorch's own package index: torch builds for one CUDA version (or CPU only) each, at <index>/<build>.
TORCH_INDEX = "https://download.pytorch.org/whl"
NVIDIA_SMI_QUERY = ["--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]
SUPPORTED_TEXT = "Windows x64, macOS on Apple Silicon and Linux x64"


@dataclass(frozen=True)
class PackageSet:
    name: str
    platform: str
    uv_platform: str
    gpu: str  # "cuda", "mps" or "cpu"
    torch_build: str = ""  # the torch build's local version label on the PyTorch index; "" = PyPI's torch
    cuda: str = ""
    min_driver: int = 0
    min_compute: float = 0.0
    macos: str = ""
    resolve_as_pypi: bool = False

    @property
    def lock(self) -> str:
        return os.path.join(LOCKS, f"{self.name}.txt")

    @property
    def cluster_lock(self) -> str:
        """Ray for distributed runs, and its dependencies that `lock` does not pin (installed together with it)."""
        return os.path.join(LOCKS, f"{self.name}-cluster.txt")

    def locks(self, cluster: bool = False) -> list[str]:
        """The lock files Install Dependencies installs: the set's, and its cluster lock for a Ray cluster."""
        return [self.lock, *([self.cluster_lock] if cluster else [])]

    def index_url(self, root: str = "") -> str:
        """The package index this set's torch comes from besides PyPI ("" when PyPI has it)."""
        return f"{(root or TORCH_INDEX).rstrip('/')}/{self.torch_build}" if self.torch_build else ""

    @property
    def label(self) -> str:
        return {"cuda": f"CUDA {self.cuda}", "mps": "Apple GPU (MPS)"}.get(self.gpu, "CPU only")


def load(path: str = SETS_FILE) -> dict[str, PackageSet]:
    with open(path, "rb") as fh:
        table = tomllib.load(fh)["sets"]
    return {name: PackageSet(name, **{key.replace("-", "_"): value for key, value in fields.items()})
            for name, fields in table.items()}


def platforms(sets: dict[str, PackageSet] | None = None) -> list[str]:
    """The platforms some set serves (what the manifest's `platforms` must list)."""
    return sorted({item.platform for item in (sets or load()).values()})


def download_mb(lock: str) -> int | None:
    """What installing a lock downloads, in MB, from the `# download-mb:` line scripts/lock.py writes."""
    try:
        with open(lock, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("# download-mb:"):
                    return int(line.split(":", 1)[1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def locked_version(lock: str, name: str) -> str:
    """The version a lock pins `name` at ("" where it does not)."""
    try:
        with open(lock, encoding="utf-8") as fh:
            for line in fh:
                found, _, version = line.strip().partition("==")
                if version and found.lower() == name.lower():
                    return version
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------------------------------------------------
# What the machine has


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str  # "580.65.06"
    compute: float | None  # CUDA compute capability, e.g. 8.9; None where the driver does not say


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader` lines."""
    found = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2 or not parts[0] or not re.match(r"\d+(\.\d+)*$", parts[1]):
            continue
        try:
            compute = float(parts[2]) if len(parts) > 2 else None
        except ValueError:  # "[N/A]" from old drivers
            compute = None
        found.append(Gpu(parts[0], parts[1], compute))
    return found


def nvidia_smi(system: str | None = None) -> str | None:
    """Where `nvidia-smi` is: on the PATH, or where Windows drivers put it (System32 for current drivers,
    `NVSMI` under Program Files for old ones)."""
    found = shutil.which("nvidia-smi")
    if found or os_rules.system_name(system) != "windows":
        return found
    windows = os.environ.get("SystemRoot", r"C:\Windows")
    programs = os.environ.get("ProgramFiles", r"C:\Program Files")
    for candidate in (os.path.join(windows, "System32", "nvidia-smi.exe"),
                      os.path.join(programs, "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe")):
        if os.path.isfile(candidate):
            return candidate
    return None


def nvidia_gpus(system: str | None = None) -> list[Gpu]:
    """The NVIDIA GPUs the driver reports ([] without a driver, or when nvidia-smi fails)."""
    command = nvidia_smi(system)
    if not command:
        return []
    try:
        done = subprocess.run([command, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL, **os_rules.popen_options(system))
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


# ---------------------------------------------------------------------------------------------------------------
# The choice


@dataclass(frozen=True)
class Choice:
    """The set to install (None: none fits) and why, in one sentence."""

    package_set: PackageSet | None
    reason: str


def choose(sets: dict[str, PackageSet], platform_tag: str, gpus: list[Gpu], macos_version: str = "",
           cpu_only: bool = False) -> Choice:
    """The set for a machine: its platform, its NVIDIA GPUs, its macOS version (macOS only); `cpu_only` skips
    the GPU sets (the user asked for the smaller download)."""
    candidates = [item for item in sets.values() if item.platform == platform_tag]
    if not candidates:
        hint = " (on a Mac with Apple Silicon, use the Apple Silicon build of Blender)" if platform_tag == "macos-x64" else ""
        return Choice(None, f"Neural Style runs on {SUPPORTED_TEXT}, not on {platform_tag}{hint}")
    by_gpu = {item.gpu: item for item in candidates}
    if "mps" in by_gpu:
        chosen = by_gpu["mps"]
        if chosen.macos and macos_version and _version(macos_version) < _version(chosen.macos):
            return Choice(None, f"the engine's packages need macOS {chosen.macos} or newer and this Mac runs "
                                f"macOS {macos_version}: update macOS, then Install Dependencies again")
        return Choice(chosen, "Apple Silicon: torch with the Apple GPU (MPS)")
    cpu, cuda = by_gpu.get("cpu"), by_gpu.get("cuda")
    if cpu_only or cuda is None or not gpus:
        why = "CPU only, as asked" if cpu_only else "no NVIDIA GPU found: CPU only"
        return Choice(cpu, why)
    usable = [gpu for gpu in gpus if _version(gpu.driver)[:1] >= (cuda.min_driver,)
              and (gpu.compute is None or gpu.compute >= cuda.min_compute)]
    if usable:
        gpu = usable[0]
        return Choice(cuda, f"{gpu.name} (driver {gpu.driver}): torch for CUDA {cuda.cuda}")
    gpu = gpus[0]
    if _version(gpu.driver)[:1] < (cuda.min_driver,):
        return Choice(cpu, f"the NVIDIA driver {gpu.driver} is older than the {cuda.min_driver} that CUDA {cuda.cuda} "
                           "needs: CPU only (update the driver, then Install Dependencies again for the GPU)")
    return Choice(cpu, f"{gpu.name} (compute capability {gpu.compute}) is older than the GPUs CUDA {cuda.cuda} "
                       f"supports ({cuda.min_compute} and newer): CPU only")


def plan(choice: Choice, cluster: bool = False) -> str:
    """The one line the preferences show before Install Dependencies: the set and why, Ray where a Ray Cluster is
    set (`cluster`), and what it all downloads."""
    if choice.package_set is None:
        return choice.reason
    locks = choice.package_set.locks(cluster)
    sizes = [download_mb(lock) for lock in locks]
    ray = f", and Ray {locked_version(locks[-1], 'ray')} for the Ray Cluster" if cluster else ""
    about = f", about {sum(sizes) / 1000:.1f} GB to download" if all(sizes) else ""
    return f"Packages for this machine: {choice.reason}{ray}{about}"


_choices: dict[bool, Choice] = {}
_asking: set[bool] = set()
_lock = threading.Lock()


def for_this_machine(cpu_only: bool = False) -> Choice:
    """`choose` for the machine Blender runs on (kept: asking nvidia-smi takes a moment, more with a sleeping GPU)."""
    with _lock:
        found = _choices.get(cpu_only)
    if found is None:
        system = os_rules.system_name()
        gpus = nvidia_gpus(system) if system in ("windows", "linux") and not cpu_only else []
        macos = platform.mac_ver()[0] if system == "macos" else ""
        found = choose(load(), os_rules.platform_tag(), gpus, macos, cpu_only)
        with _lock:
            _choices[cpu_only] = found
            _asking.discard(cpu_only)
    return found


def for_this_machine_soon(cpu_only: bool = False) -> Choice | None:
    """`for_this_machine` without waiting, for drawing: None while the machine is being asked on a thread."""
    with _lock:
        if cpu_only in _choices:
            return _choices[cpu_only]
        if cpu_only not in _asking:
            _asking.add(cpu_only)
            threading.Thread(target=for_this_machine, args=(cpu_only,), name="neural-style-gpu", daemon=True).start()
    return None


def asking() -> bool:
    """Whether `for_this_machine_soon` is still waiting for an answer (the preferences redraw when it comes)."""
    with _lock:
        return bool(_asking)


def describe_build(build: dict) -> str:
    """The one line the preferences show for an installed torch, from the worker's check (`build`):
    "Installed: torch 2.13.0 CUDA 13.0 (NVIDIA GeForce RTX 4090)", "Installed: torch 2.13.0, Apple GPU (MPS)",
    "Installed: torch 2.13.0, CPU only"."""
    version = str(build.get("torch") or "?").split("+")[0]
    if build.get("cuda"):
        text = f"Installed: torch {version} CUDA {build['cuda']}"
        return f"{text} ({build['gpu']})" if build.get("gpu") else f"{text}, but no NVIDIA GPU answers: CPU only"
    if build.get("mps"):
        return f"Installed: torch {version}, Apple GPU (MPS)"
    if build.get("mps_built"):
        return f"Installed: torch {version}, CPU only (the Apple GPU is not available to it)"
    return f"Installed: torch {version}, CPU only"
