"""Blender multilayer EXR renders: the Combined, Vector, Depth and Cryptomatte passes.

Blender names channels "<view layer>.<pass>.<channel>" ("ViewLayer.Vector.X");
Blender 5 writes one EXR part per pass, older versions one part for all, so
channels are gathered from every part.  OpenCV cannot read such files, hence
the `OpenEXR` package.

Vector pass convention, measured on Cycles renders (Blender 5.0.1, see
tests/test_temporal.py): in Blender's pixel space (x right, y *up*),
X,Y = (position in the previous frame) - (position now) and
Z,W = (position now) - (position in the next frame).  EXR rows run top down,
so in this engine's flow convention (y down, see engine.flow):
to_prev = (X, -Y) and to_next = (-Z, W).

The Depth pass ("<layer>.Depth.Z") is the distance from the camera along its
view axis, in scene units (1e10 where nothing was hit); engine.trust uses it
to find pixels that were hidden in the previous frame.

Cryptomatte passes ("<layer>.CryptoObject00.r/g/b/a", ...) hold, per pixel, pairs
of (ID, coverage) ranked by coverage: r,g and b,a of each numbered channel
set.  An ID is the MurmurHash3 of a name stored as float32 bits; the file's
header maps names to those hashes ("cryptomatte/<key>/manifest", JSON name -> hex).
Summing the coverage of every rank whose ID is one of the wanted names gives an
anti-aliased matte (engine.regions uses them as masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EngineError
from .images import linear_to_srgb


@dataclass(frozen=True)
class Render:
    """One rendered frame: sRGB colour (HxWx3/4) and, when rendered, its motion vectors and depth (HxW)."""

    image: np.ndarray
    to_prev: np.ndarray | None
    to_next: np.ndarray | None
    depth: np.ndarray | None = None


def is_multilayer(path: str | Path) -> bool:
    """True for an EXR with a Blender Combined pass ("<layer>.Combined.R")."""
    if Path(path).suffix.lower() != ".exr":
        return False
    return any(name.endswith(".Combined.R") for name in _channels(Path(path), header_only=True))


def read_render(path: str | Path, hdr: bool = False) -> Render:
    """Read the Combined pass (as straight-alpha sRGB), the Vector and the Depth pass of a Blender multilayer EXR.

    With several view layers, the first by name that has a Combined pass is used.  With `hdr`, colours above 1
    are kept (extended sRGB, for engine.hdr); otherwise they are clipped.
    """
    path = Path(path)
    channels = _channels(path)
    combined = sorted(n[: -len(".Combined.R")] for n in channels if n.endswith(".Combined.R"))
    if not combined:
        raise EngineError(f"{path} has no Combined pass; render it as a Blender multilayer EXR")
    layer = combined[0]
    rgb = np.stack([channels[f"{layer}.Combined.{c}"] for c in "RGB"], axis=2)
    alpha = channels.get(f"{layer}.Combined.A")
    if alpha is None:
        image = linear_to_srgb(rgb, hdr=hdr)
    else:  # Blender's EXR colour is premultiplied; the engine's arrays have straight alpha
        alpha = np.clip(alpha, 0, 1)[..., None]
        straight = np.divide(rgb, alpha, out=np.zeros_like(rgb), where=alpha > 0)
        image = np.concatenate([linear_to_srgb(straight, hdr=hdr), alpha], axis=2)
    depth = channels.get(f"{layer}.Depth.Z")
    vector = [channels.get(f"{layer}.Vector.{c}") for c in "XYZW"]
    if any(v is None for v in vector):
        return Render(image, None, None, depth)
    x, y, z, w = vector
    return Render(image, np.stack([x, -y], axis=2), np.stack([-z, w], axis=2), depth)


# Cryptomatte pass per kind of name.
CRYPTOMATTE = {"object": "CryptoObject", "material": "CryptoMaterial", "asset": "CryptoAsset"}


class Cryptomattes:
    """A render's Cryptomatte passes and manifests, read once; `coverage` for as many regions as needed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.channels = _channels(self.path)
        self.manifests = _manifests(self.path)

    def coverage(self, kind: str, names: list[str]) -> np.ndarray:
        """Coverage (HxW in [0, 1]) of the objects/materials/assets `names` in the `kind` pass.

        A name the render does not list covers nothing (an object out of this frame's view layer); a render
        without the pass is an EngineError.
        """
        if kind not in CRYPTOMATTE:
            raise EngineError(f"Cryptomatte kind must be one of {', '.join(CRYPTOMATTE)}, got {kind!r}")
        suffix = f".{CRYPTOMATTE[kind]}"
        layers = sorted({n.rsplit(".", 1)[0][:-2] for n in self.channels
                         if n.rsplit(".", 1)[0][:-2].endswith(suffix)})
        if not layers:
            raise EngineError(f"{self.path} has no {CRYPTOMATTE[kind]} pass; render with Cryptomatte {kind.title()} on")
        layer = layers[0]
        manifest = self.manifests.get(layer)
        if manifest is None:
            raise EngineError(f"{self.path} has a {CRYPTOMATTE[kind]} pass but no Cryptomatte manifest in its header")
        wanted = np.array([int(manifest[n], 16) for n in names if n in manifest], np.uint32).view(np.float32)
        coverage = None
        for index in range(100):
            rank = [self.channels.get(f"{layer}{index:02d}.{c}") for c in "rgba"]
            if rank[0] is None:
                break
            for ids, cover in ((rank[0], rank[1]), (rank[2], rank[3])):
                part = np.where(np.isin(ids, wanted), cover, 0)
                coverage = part if coverage is None else coverage + part
        return np.clip(coverage, 0, 1).astype(np.float32)


def cryptomatte(path: str | Path, kind: str, names: list[str]) -> np.ndarray:
    """`Cryptomattes(path).coverage(kind, names)`, for one mask from one file."""
    return Cryptomattes(path).coverage(kind, names)


def _manifests(path: Path) -> dict[str, dict[str, str]]:
    """Cryptomatte layer name ("ViewLayer.CryptoObject") -> its manifest (name -> hex hash), from the header."""
    import json

    import OpenEXR

    keys: dict[str, dict[str, str]] = {}
    with OpenEXR.File(str(path), header_only=True) as exr:
        for part in exr.parts:
            for key, value in part.header.items():
                if str(key).startswith("cryptomatte/"):
                    keys.setdefault(str(key).split("/")[1], {})[str(key).split("/")[2]] = value
    manifests = {}
    for fields in keys.values():
        if "name" in fields and "manifest" in fields:
            try:
                manifests[str(fields["name"])] = json.loads(fields["manifest"])
            except ValueError:
                continue
    return manifests


def _channels(path: Path, header_only: bool = False) -> dict[str, np.ndarray | None]:
    """Every channel of every part by name; only the names (values None) with `header_only`."""
    try:
        import OpenEXR
    except ImportError:
        raise EngineError("reading Blender multilayer EXR needs the OpenEXR package: pip install OpenEXR") from None
    if not path.is_file():
        raise EngineError(f"image not found: {path}")
    try:
        with OpenEXR.File(str(path), separate_channels=True, header_only=header_only) as exr:
            if header_only:
                return {channel.name: None for part in exr.parts for channel in part.header["channels"]}
            return {
                name: np.asarray(channel.pixels, dtype=np.float32)
                for part in exr.parts
                for name, channel in part.channels.items()
            }
    except Exception as exc:  # noqa: BLE001 - the binding raises bare RuntimeErrors for any bad file
        raise EngineError(f"cannot read EXR {path}: {exc}") from None
