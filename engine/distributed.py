"""A shot across many machines: the frames of a sequence stylized as Ray tasks.

Ray (an optional dependency, the `cluster` extra) schedules, retries and moves
data; this module only decides what a task is.  The same code runs on a
laptop (a local Ray started on demand), on a cluster (`ray start --head`, then
`ray start --address` on each node) and in CI.

Temporal coherence ties each frame to the previous stylized one, so a shot is
cut into chunks of consecutive frames.  Each chunk also stylizes `overlap`
frames before its own first frame (a lead-in that starts it from a settled
state); those frames are stylized by both neighbours and cross-faded, so no
chunk border shows a jump.  Without temporal coherence every frame is its own
chunk.  Fast mode trains once (on whichever node Ray picks) and applies the
model in the chunks.

Files: every node must see `out_dir` (shared storage).  Each chunk writes its
frames as float32 `.npy` files under `out_dir/.chunks/<chunk>/` as soon as
they are done, so a task retried after its node died resumes from the last
finished frame: finished frames are never recomputed.  The final frames are
composed by the driver.  A record of the settings (`.neural-style-sequence.json`)
makes a rerun with the same settings resume, and one with other settings
start over.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cluster_check import check, use_token
from .environment import ray_missing
from .errors import Cancelled, EngineError
from .files import atomic_write
from .fingerprints import array_digest, data_digest
from .options import JsonOptions, StyleOptions
from .progress import CancelFn, Progress, ProgressFn

RECORD = ".neural-style-sequence.json"
CHUNKS = ".chunks"
# Seconds between looks at the chunk folders for newly finished frames (per-frame progress).
POLL = 0.5
# The (address, token file) this process's Ray connection was made for (a worker may serve several in turn).
_connected: tuple | None = None


@dataclass(frozen=True)
class ClusterOptions(JsonOptions):
    """Where and how a sequence is spread.

    `address`: None or "local" starts a Ray on this machine, "auto" joins the
    cluster this machine belongs to, "host:port" joins that head node.
    `chunk`/`overlap`: frames per task and frames cross-faded between chunks
    (temporal coherence only).  `retries`: how often a task is rerun after the
    node running it died.  `gpus`: GPUs each task asks Ray for (0 = CPU tasks).  `token_file`: the
    cluster's authentication token (None: where Ray looks, engine/cluster_check.py).
    """

    _label = "cluster option"

    address: str | None = None
    chunk: int = 8
    overlap: int = 2
    retries: int = 3
    gpus: float = 0.0
    token_file: str | None = None

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise EngineError(f"chunk must be at least 1 frame, got {self.chunk}")
        if not 0 <= self.overlap < self.chunk:
            raise EngineError(f"overlap must be between 0 and chunk - 1 ({self.chunk - 1}), got {self.overlap}")
        if self.retries < 0 or not 0 <= self.gpus <= 64:
            raise EngineError("retries must not be negative and gpus must be between 0 and 64")


@dataclass(frozen=True)
class Chunk:
    """Frames `start:stop` belong to this chunk; it stylizes `lead:stop`, `lead <= start`."""

    index: int
    lead: int
    start: int
    stop: int

    @property
    def frames(self) -> range:
        return range(self.lead, self.stop)

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


def plan_chunks(count: int, chunk: int, overlap: int) -> list[Chunk]:
    """Consecutive chunks of `chunk` frames, each after the first led in by `overlap` earlier frames."""
    return [
        Chunk(i, max(0, start - overlap), start, min(start + chunk, count))
        for i, start in enumerate(range(0, count, chunk))
    ]


def fade_weight(chunk: Chunk, frame: int) -> float:
    """Share of `chunk`'s own result in a lead-in frame: rises over the overlap, 1 on owned frames."""
    if frame >= chunk.start:
        return 1.0
    return (frame - chunk.lead + 1) / (chunk.start - chunk.lead + 1)


@dataclass
class SequenceResult:
    written: list[Path]
    skipped: list[Path]
    failed: dict[str, str]  # frame file name -> why it could not be made
    seconds: float
    nodes: int


def stylize_sequence(
    frames: list[Path],
    styles: list[np.ndarray],
    options: StyleOptions,
    temporal,
    out_dir: str | Path,
    cluster: ClusterOptions | None = None,
    vectors: list[Path] | None = None,
    suffix: str = ".png",
    fast=None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    regions: list[dict] | None = None,
    mattes: list[Path] | None = None,
    depth_scale: float = 1.0,
) -> SequenceResult:
    """Stylize `frames` (paths) into `out_dir/<stem><suffix>` on a Ray cluster; see the module text.

    `temporal` is a `TemporalOptions`; `fast` a `FastOptions` for fast mode
    (None = optimisation).  `regions`, `mattes` and `depth_scale` as for
    `engine.temporal.stylize_sequence` (each frame's masks from its own
    render; mask files and renders on shared storage); HDR frames keep their
    range.  Returns what was written, what was already there and, per frame,
    why a frame could not be made (empty when all are present).
    """
    from .regions import check_shot, mask_files
    from .temporal import TemporalOptions, shot_mattes

    cluster = cluster or ClusterOptions()
    temporal = temporal or TemporalOptions()
    if not frames:
        raise EngineError("the sequence has no frames")
    if vectors is not None and len(vectors) != len(frames):
        raise EngineError(f"{len(vectors)} motion-vector files for {len(frames)} frames; give one per frame")
    if fast is not None and (regions is not None or depth_scale < 1):
        raise EngineError("regions and depth bands work with optimisation, not fast mode")
    mattes = shot_mattes(frames, vectors, mattes)
    check_shot(regions, len(frames), mattes, depth_scale)
    out_dir = Path(out_dir)
    outputs = [out_dir / f"{Path(p).stem}{suffix}" for p in frames]
    if any(o.resolve() == Path(p).resolve() for o, p in zip(outputs, frames)):
        raise EngineError(f"the output folder {out_dir} would overwrite the frames themselves; choose another folder")
    started = time.perf_counter()
    ray = connect(cluster.address, cluster.token_file)  # a wrong address or token changes nothing on disk
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "styles": [array_digest(s) for s in styles],
        "options": options.to_dict(),
        "temporal": temporal.to_dict(),
        "fast": fast.to_dict() if fast is not None else None,
        "frames": [_file_key(p) for p in frames],
        "vectors": [_file_key(p) for p in vectors] if vectors else None,
        "chunk": [cluster.chunk, cluster.overlap] if temporal.enabled else [1, 0],
        "regions": regions,
        "masks": [_file_key(p) for p in mask_files(regions)],
        "mattes": [_file_key(p) for p in mattes] if mattes and (regions is not None or depth_scale < 1) else None,
        "depth_scale": depth_scale,
    }
    fingerprint = data_digest(record)
    work = out_dir / CHUNKS
    if _recorded(out_dir) != fingerprint:
        shutil.rmtree(work, ignore_errors=True)
        for path in outputs:
            path.unlink(missing_ok=True)
        with atomic_write(out_dir / RECORD) as tmp:
            tmp.write_text(json.dumps({"fingerprint": fingerprint, **record}, indent=1, default=str))
    skipped = [p for p in outputs if p.is_file()]
    chunk, overlap = (cluster.chunk, cluster.overlap) if temporal.enabled else (1, 0)
    chunks = [c for c in plan_chunks(len(frames), chunk, overlap) if not all(outputs[i].is_file() for i in range(c.start, c.stop))]
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    failed: dict[str, str] = {}
    if chunks:
        job = {
            "frames": [str(p) for p in frames],
            "vectors": [str(p) for p in vectors] if vectors else None,
            "options": options.to_dict(),
            "temporal": temporal.to_dict(),
            "work": str(work),
            "regions": regions,
            "mattes": [str(p) for p in mattes] if mattes else None,
            "depth_scale": depth_scale,
        }
        if fast is not None:
            job["model"] = _train_fast(ray, frames, styles, options, fast, out_dir, cluster)
        failed = _run_chunks(ray, job, ray.put(styles), chunks, cluster, progress, cancel, started)
    written = _compose(chunks, outputs, frames, work, failed)
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    return SequenceResult(written, skipped, failed, time.perf_counter() - started, nodes)


def stylize_image(
    content: np.ndarray,
    styles: list[np.ndarray],
    options: StyleOptions,
    cluster: ClusterOptions | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    regions: list | None = None,
) -> np.ndarray:
    """One large image (8K) with the tiles of each tiled scale optimised on Ray nodes at once.

    `regions` (engine/regions.py) travel too: each region's Grams once per pass, each tile's cut of the masks
    with the tile.

    Scales small enough to optimise whole run here; a tiled scale (by free memory, or `options.tile_size`)
    sends each pass's tiles as Ray tasks.  The pass's style Grams go into Ray's object store once and every
    task reads them from there; each node loads the network once per worker process.  The tiles of one pass
    all start from the same image, so the result is the one-machine tiled result up to the content targets'
    backend (onnxruntime here, torch on the nodes: ~1e-6 relative).
    """
    from .pipeline import stylize

    cluster = cluster or ClusterOptions()
    ray = connect(cluster.address, cluster.token_file)
    return stylize(content, styles, options, progress, cancel, tile_runner=RayTiles(ray, options, cluster, cancel),
                   regions=regions)


class RayTiles:
    """A `tiling.TileRunner` that optimises a pass's tiles as Ray tasks."""

    def __init__(self, ray, options: StyleOptions, cluster: ClusterOptions, cancel: CancelFn | None = None):
        self.ray = ray
        self.options = options.to_dict()
        self.cancel = cancel
        self.task = ray.remote(max_retries=cluster.retries, **_resources(cluster))(_tile_task)

    def __call__(self, starts, contents, grams, iterations: int, reporter, guides=None) -> list:
        """`guides` (spatial control): each tile's region guides; their Grams are the same for every tile,
        so they travel once, the tile's masks with the tile."""
        import torch

        ray = self.ray
        grams_ref = ray.put(_numpy(grams))
        region_grams = ray.put([] if not guides else [_numpy(g.grams) for g in guides[0]])
        masks = [None] * len(starts) if not guides else [
            [(g.mask.detach().float().cpu().numpy(), g.weight) for g in tile] for tile in guides]
        refs = [self.task.remote(self.options, s.detach().float().cpu().numpy(), c.detach().float().cpu().numpy(),
                                 grams_ref, iterations, region_grams, m) for s, c, m in zip(starts, contents, masks)]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        while pending:
            if self.cancel is not None and self.cancel():
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise Cancelled("cancelled")
            done, pending = ray.wait(pending, num_returns=1, timeout=POLL)
            for ref in done:
                try:
                    tile, losses = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise _unwrap(exc) from None
                results[index[ref]] = torch.from_numpy(tile)
                reporter.tile_finished(sum(r is not None for r in results))
                reporter.step(losses, lambda: None, steps=iterations)
        return results


# The network of each option set a Ray worker process has loaded (a process serves many tiles).
_networks: dict[str, tuple] = {}


def _numpy(grams: dict) -> dict:
    return {name: g.detach().float().cpu().numpy() for name, g in grams.items()}


def _tile_task(options: dict, start: np.ndarray, content: np.ndarray, grams: dict, iterations: int,
               region_grams: list | None = None, masks: list | None = None):
    """Optimise one tile towards the shared Grams (with regions: each region's Grams under the tile's cut of
    its mask) and its own content; returns (tile, last losses)."""
    import torch

    from .model import prepare_network
    from .optimize import Targets, optimize_image
    from .progress import Reporter
    from .regions import Guide
    from .targets import content_targets
    from .tensors import autocast_factory

    style_options = StyleOptions.from_dict(options)
    key = data_digest(options)
    if key not in _networks:
        _networks[key] = prepare_network(style_options)
    net, plan, device = _networks[key]
    autocast = autocast_factory(device, style_options.precision)
    content_t = torch.from_numpy(content).to(device)
    guides = None
    if masks is not None:
        guides = [Guide({name: torch.from_numpy(g).to(device) for name, g in region.items()},
                        torch.from_numpy(mask).to(device), weight) for region, (mask, weight) in zip(region_grams, masks)]
    targets = Targets(content_targets(net, content_t, plan.content, autocast),
                      {name: torch.from_numpy(g).to(device) for name, g in grams.items()}, guides)
    reporter = Reporter(iterations, None, None)
    out = optimize_image(net, torch.from_numpy(start).to(device), targets, style_options, plan.weights, iterations,
                         reporter, autocast)
    return out.float().cpu().numpy(), reporter.last_losses


def connect(address: str | None, token_file: str | None = None):
    """The `ray` module, connected to `address` (see `ClusterOptions`) with the token in `token_file` (None:
    wherever Ray looks); an EngineError with one sentence when Ray is missing or the address is wrong
    (engine/cluster_check.py looks before Ray does)."""
    remote = address not in (None, "", "local")
    use_token(token_file)  # Ray reads its token settings when it connects
    try:
        import ray
    except ImportError:
        raise ray_missing() from None
    if not hasattr(ray, "init"):  # a stray folder named ray (Ray's own /tmp/ray) taken for a namespace package
        raise ray_missing()
    global _connected
    key = (address, os.environ.get("RAY_AUTH_TOKEN_PATH"))
    if ray.is_initialized() and _connected != key:
        ray.shutdown()  # this process served another cluster (or token) before
        _forget_token()
    if not ray.is_initialized():
        if remote and address != "auto":
            check(address)
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
        try:
            if remote:
                ray.init(address=address, **kwargs)
            else:
                ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types here (ConnectionError, AuthenticationError...)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"cannot reach the Ray cluster at {address or 'this machine'}: {reason}") from None
        _connected = key
    return ray


def _forget_token() -> None:
    """Ray's C++ side caches the token it loaded; a new token file needs a fresh look."""
    try:
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


def _file_key(path) -> list:
    stat = Path(path).stat()
    return [Path(path).name, stat.st_size, stat.st_mtime_ns]


def _recorded(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / RECORD).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _resources(cluster: ClusterOptions) -> dict:
    return {"num_gpus": cluster.gpus} if cluster.gpus else {"num_cpus": 1}


def _train_fast(ray, frames, styles, options: StyleOptions, fast, out_dir: Path, cluster: ClusterOptions) -> str:
    """Train the fast-mode model once, as a Ray task; the model lands on shared storage."""
    model_dir = out_dir / ".model"
    model_dir.mkdir(exist_ok=True)
    task = ray.remote(max_retries=cluster.retries, **_resources(cluster))(_train_task)
    try:
        return ray.get(task.remote([str(p) for p in frames], styles[0], options.to_dict(), fast.to_dict(), str(model_dir)))
    except ray.exceptions.RayTaskError as exc:
        raise _unwrap(exc) from None


def _run_chunks(ray, job, styles, chunks, cluster, progress, cancel, started) -> dict[str, str]:
    """Submit every chunk, report frames as they arrive, retry on node loss (Ray), collect failures."""
    task = ray.remote(max_retries=cluster.retries, retry_exceptions=False, **_resources(cluster))(_chunk_task)
    pending = {task.remote(job, c.__dict__, styles): c for c in chunks}
    total = sum(len(c.frames) for c in chunks)
    failed: dict[str, str] = {}
    reported = -1
    while pending:
        if cancel is not None and cancel():
            for ref in pending:
                ray.cancel(ref, force=True)
            raise Cancelled("cancelled")
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL)
        for ref in done:
            chunk = pending.pop(ref)
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task's failure is reported per frame, the run goes on
                reason = str(_unwrap(exc)).splitlines()[0] if str(exc) else type(exc).__name__
                for i in range(chunk.start, chunk.stop):
                    failed[Path(job["frames"][i]).name] = reason
        finished = sum(len(list((Path(job["work"]) / c.name).glob("*.npy"))) for c in chunks)
        if progress is not None and finished != reported:
            reported = finished
            progress(Progress(iteration=finished, total=total, losses={}, elapsed=time.perf_counter() - started,
                              kind="frame", frame=finished, frames=total))
    return failed


def _unwrap(exc: Exception) -> Exception:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


def _chunk_path(work: Path, chunk: Chunk, frame: int) -> Path:
    return work / chunk.name / f"{frame:06d}.npy"


def _chunk_task(job: dict, chunk_fields: dict, styles: list[np.ndarray]) -> int:
    """Stylize one chunk's frames in order, resuming after the last frame already on disk.  The results stay in
    the frames' display range (engine.hdr); `_compose` gives them back their own."""
    from .regions import for_frame
    from .temporal import TemporalOptions, frame_motion, read_frame, stylize_frame

    chunk = Chunk(**chunk_fields)
    work = Path(job["work"])
    (work / chunk.name).mkdir(parents=True, exist_ok=True)
    options = StyleOptions.from_dict(job["options"])
    temporal = TemporalOptions.from_dict(job["temporal"])
    vectors = job["vectors"]
    before = None  # (Frame, stylized result) of the previous frame
    made = 0
    for index in chunk.frames:
        frame = read_frame(job["frames"][index], vectors[index] if vectors else None)
        path = _chunk_path(work, chunk, index)
        if path.is_file():
            result = np.load(path)
        else:
            motion = frame_motion(before[0], frame, temporal) if before and temporal.enabled else None
            previous = before[1] if before else None
            if "model" in job:
                result = _fast_frame(job["model"], frame.content, options, temporal, previous, motion)
            else:
                regions = for_frame(job["regions"], *frame.content.shape[:2], len(styles), options,
                                    job["mattes"][index] if job["mattes"] else None, job["depth_scale"], index)
                result = stylize_frame(frame.content, styles, options, temporal, previous, motion, regions=regions)
            with atomic_write(path) as tmp:
                np.save(tmp, result.astype(np.float32))
            made += 1
        before = (frame, result)
    return made


def _fast_frame(model: str, content, options: StyleOptions, temporal, previous, motion) -> np.ndarray:
    from .fast.inference import apply
    from .temporal import blend_previous

    result = apply(model, content, options.device, options.size)
    if temporal.enabled and previous is not None and motion is not None:
        result = blend_previous(result, previous, motion, temporal.blend)
    return result


def _train_task(frames: list[str], style: np.ndarray, options: dict, fast: dict, model_dir: str) -> str:
    from .fast.options import FastOptions
    from .fast.training import train

    return str(train(frames, style, StyleOptions.from_dict(options), FastOptions.from_dict(fast), model_dir))


def _compose(chunks: list[Chunk], outputs: list[Path], frames: list[Path], work: Path,
             failed: dict[str, str]) -> list[Path]:
    """Write the final frames: each owned frame, cross-faded with the next chunk's lead-in where it has one, in
    its frame's own range (HDR highlights back above 1)."""
    from .images import write_image
    from .temporal import display_frame

    by_frame: dict[int, list[tuple[Chunk, Path]]] = {}
    for chunk in chunks:
        for index in chunk.frames:
            path = _chunk_path(work, chunk, index)
            if path.is_file():
                by_frame.setdefault(index, []).append((chunk, path))
    written = []
    for index, parts in sorted(by_frame.items()):
        owner = [(c, p) for c, p in parts if c.start <= index < c.stop]
        if not owner or outputs[index].name in failed:
            continue
        image = np.load(owner[0][1])
        for chunk, path in parts:
            if chunk.lead <= index < chunk.start:  # the next chunk's lead-in: fade it in
                share = fade_weight(chunk, index)
                image = (1 - share) * image + share * np.load(path)
        _, restore = display_frame(frames[index])
        written.append(write_image(outputs[index], restore(image.astype(np.float32)), protect=tuple(frames)))
    return written
