"""The style engine as a separate process: `python -m engine.worker`.

Blender (or any other host) talks to the engine only through this module, so
the host never imports torch and a crash here never takes the host down.  The
protocol, JSON lines on stdin/stdout with pixels in `.npy` files, is specified
in docs/worker-protocol.md; this file is its one implementation.

Commands form one table, `COMMANDS`: a name, its handler and its schema, the
fields it takes with their checks.  Every request is checked against its
schema once, before any work: wrong types, missing or unknown fields, unreadable
or absurd `.npy` files and outputs that cannot be written (or that are one of
the job's inputs) are answered with one `error` line.

Threads: a reader thread owns stdin, so `cancel`, `ping` and `quit` are seen
while a job runs on the main thread; the engine polls the cancel flag once an
iteration.  Only protocol lines reach the real stdout: file descriptor 1 is
pointed at stderr at start-up, so a stray `print` or a library writing to fd 1
lands in the log instead of corrupting the stream (the engine loads torch only
when the first job runs, after that switch).
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from . import Cancelled, EngineError, os_rules, stylize
from .files import atomic_write
from .images import check_size
from .options import DEVICES, MAX_SIDE, JsonOptions, StyleOptions

PROTOCOL_VERSION = 1
# The structured fields of `engine.progress.Progress` a `progress` event carries (plus losses, elapsed, stage).
PROGRESS_FIELDS = ("kind", "iteration", "total", "scale", "scales", "tile", "tiles", "frame", "frames", "width", "height",
                   "saved")


class Channel:
    """Writes one JSON event a line to the protocol stream, from any thread (strict JSON: no NaN)."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}, allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def claim_stdout() -> IO[str]:
    """Return a private stream on the original stdout and send fd 1 to stderr."""
    sys.stdout.flush()
    # "\n" alone on every system: a Windows text stream would otherwise end each line with "\r\n".
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1, newline=os_rules.NEWLINE)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


# ---------------------------------------------------------------------------------------------------------------
# Field checks: (value, name) -> the value to use; each raises EngineError with one sentence.

Check = Callable[[Any, str], Any]


class InputPath(str):
    """A path the job reads (outputs must differ from every one)."""


class OutputPath(str):
    """A path the job writes."""


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(name: str, what: str, value) -> EngineError:
    return EngineError(f"{name} must be {what}, got {_shown(value)}")


def text(value, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _expected(name, "a non-empty string", value)
    return value


def whole(low: int, high: int | None = None) -> Check:
    def check(value, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected(name, "a whole number", value)
        if high is None and value < low:
            raise EngineError(f"{name} must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise EngineError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return check


def number(low: float, high: float) -> Check:
    def check(value, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _expected(name, "a finite number", value)
        if not low <= value <= high:
            raise EngineError(f"{name} must be between {low} and {high}, got {value}")
        return float(value)

    return check


def request_id(value, name: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _expected(name, "a string or a whole number", value)
    return value


def choice(allowed: tuple[str, ...]) -> Check:
    def check(value, name: str) -> str:
        if value not in allowed:
            raise EngineError(f"{name} must be one of {', '.join(allowed)}, got {_shown(value)}")
        return value

    return check


def non_empty_list(check: Check) -> Check:
    def check_list(value, name: str) -> list:
        if not isinstance(value, list) or not value:
            raise _expected(name, "a non-empty list", value)
        return [check(item, f"{name}[{index}]") for index, item in enumerate(value)]

    return check_list


def input_file(value, name: str) -> InputPath:
    path = text(value, name)
    if not os.path.isfile(path):
        raise EngineError(f"{name}: file not found: {path}")
    return InputPath(path)


def pixels(value, name: str) -> InputPath:
    """A `.npy` image written by the host: its header is checked before anything is loaded."""
    path = InputPath(text(value, name))
    try:
        if not os.path.isfile(path):
            raise OSError("no such file")
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the {name} pixels from {path}: {exc}") from None
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise EngineError(f"the {name} pixels must be HxWx3 or HxWx4, got shape {shape}")
    if dtype.kind != "f":
        raise EngineError(f"the {name} pixels must be floating point, got {dtype}")
    check_size(shape[1], shape[0], f"the {name} pixels {path}")  # the limits image files have
    return path


def output_file(value, name: str) -> OutputPath:
    """A `.npy` path the job will write: a file in an existing folder this process can write to."""
    path = text(value, name)
    if os.path.isdir(path):
        raise EngineError(f"{name} is a folder, not a file: {path}")
    if not path.endswith(".npy"):
        raise EngineError(f"{name} must be a .npy path, got {_shown(path)}")
    problem = os_rules.name_problem(os.path.basename(path))
    if problem:
        raise EngineError(f"{name}: {problem}")
    writable_folder(os.path.dirname(os.path.abspath(path)), f"{name} folder")
    return OutputPath(path)


def writable_folder(value, name: str) -> str:
    path = text(value, name)
    if not os.path.isdir(path):
        raise EngineError(f"{name} does not exist: {path}")
    try:
        with tempfile.TemporaryFile(dir=path):  # the real test: permissions, read-only mounts, /proc
            pass
    except OSError:
        raise EngineError(f"{name} is not writable: {path}") from None
    return path


def options_of(load: Callable[[], type[JsonOptions]]) -> Check:
    """A JSON object of one option dataclass's fields; `JsonOptions.from_dict` checks names, types and ranges.

    `load` returns the class (imported when the first job needs it: some live beside torch code).
    """
    return lambda value, name: load().from_dict(value)


def object_of(schema: dict[str, tuple[Check, bool]]) -> Check:
    """A JSON object whose fields follow `schema` (name -> (check, required))."""

    def check(value, name: str) -> dict:
        if not isinstance(value, dict):
            raise _expected(name, "an object", value)
        return validate(schema, value, f"{name}.")

    return check


def validate(schema: dict[str, tuple[Check, bool]], message: dict, prefix: str = "") -> dict:
    """The checked fields of `message` (absent optional ones are None); the first problem raises EngineError."""
    unknown = sorted(set(message) - set(schema))
    if unknown:
        raise EngineError(f"unknown field(s): {', '.join(prefix + key for key in unknown)}")
    missing = [prefix + key for key, (_, required) in schema.items() if required and message.get(key) in (None, "", [])]
    if missing:
        raise EngineError(f"the request is missing {', '.join(missing)}")
    return {key: None if message.get(key) is None else check(message[key], prefix + key)
            for key, (check, _) in schema.items()}


def paths_of(value, kind: type[str]) -> list[str]:
    """Every `kind` path inside checked fields (nested objects and lists included)."""
    if isinstance(value, kind):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [path for item in items for path in paths_of(item, kind)]


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_outputs(checked: dict) -> None:
    """No output may be one of the job's inputs, or another of its outputs."""
    inputs, outputs = paths_of(checked, InputPath), paths_of(checked, OutputPath)
    for index, output in enumerate(outputs):
        if any(_same(output, path) for path in inputs):
            raise EngineError(f"refusing to write over one of the job's inputs: {output}")
        if any(_same(output, other) for other in outputs[index + 1:]):
            raise EngineError(f"two outputs of the job are the same file: {output}")


# ---------------------------------------------------------------------------------------------------------------
# Jobs


def _temporal_options():
    from .temporal import TemporalOptions  # torch loads with the first job, not at start-up

    return TemporalOptions


def _fast_options():
    from .fast.options import FastOptions

    return FastOptions


def region_specs(value, name: str, per_frame: bool = False) -> list[dict]:
    """Spatial control regions (engine/regions.py, docs/worker-protocol.md): their shape here, their masks
    when the job runs; mask files are inputs.  `per_frame` (a shot): a mask may also be {"files": [...]}, one
    per frame."""
    from .regions import REGION_FIELDS, REST

    if not isinstance(value, list) or not value:
        raise _expected(name, "a non-empty list of regions", value)
    specs = []
    for index, spec in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(spec, dict):
            raise _expected(where, "an object", spec)
        unknown = sorted(set(spec) - set(REGION_FIELDS))
        if unknown:
            raise EngineError(f"unknown field(s): {', '.join(f'{where}.{key}' for key in unknown)}")
        mask = spec.get("mask")
        if isinstance(mask, dict) and set(mask) == {"file"}:
            mask = {"file": input_file(mask["file"], f"{where}.mask.file")}
        elif per_frame and isinstance(mask, dict) and set(mask) == {"files"}:
            mask = {"files": non_empty_list(input_file)(mask["files"], f"{where}.mask.files")}
        elif not (mask == REST or (isinstance(mask, dict) and len(mask) == 1 and set(mask) <= {"object", "material"})):
            files = ', {"files": [one per frame]}' if per_frame else ""
            raise _expected(f"{where}.mask",
                            f'"rest", {{"file": path}}{files}, {{"object": [names]}} or {{"material": [names]}}', mask)
        specs.append({**spec, "mask": mask})
    return specs


def shot_region_specs(value, name: str) -> list[dict]:
    """A shot's regions (`stylize_sequence`): masks may be per frame."""
    return region_specs(value, name, per_frame=True)


TEMPORAL = object_of({
    "options": (options_of(_temporal_options), False),
    "previous_output": (input_file, False),
    "vectors": (input_file, False),
    "previous_vectors": (input_file, False),
    "previous_content": (pixels, False),
})


@dataclass
class Job:
    """One job request, checked, with what its handler needs to report and to notice a cancel."""

    id: Any
    fields: dict
    channel: Channel
    cancel: Callable[[], bool]

    def progress(self, p) -> None:
        self.channel.emit("progress", id=self.id, **progress_fields(p))


def progress_fields(p) -> dict:
    """A `Progress` as the `progress` event's fields; a non-finite loss becomes null (strict JSON)."""
    losses = {name: (float(value) if math.isfinite(float(value)) else None) for name, value in p.losses.items()}
    return {**{name: getattr(p, name) for name in PROGRESS_FIELDS}, "losses": losses,
            "elapsed": round(p.elapsed, 3), "stage": p.stage}


def load_array(path: str, what: str) -> np.ndarray:
    """An HxWx3/4 float image array written by the host (its header was checked by `pixels`)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the {what} pixels from {path}: {exc}") from None
    if not np.isfinite(array).all():
        raise EngineError(f"the {what} pixels hold NaN or infinite values: {path}")
    return array.astype(np.float32, copy=False)


def save_array(path: str, array: np.ndarray) -> None:
    """Write atomically, so the host never reads a half-written file and no partial file is left."""
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


def previous_frame(content: np.ndarray, settings, temporal: dict):
    """(previous stylized frame, motion from it to `content`) from a `temporal` field; Nones when unknown."""
    from .images import read_image
    from .temporal import linked_motion

    if temporal["previous_output"] is None:
        return None, None
    previous = read_image(temporal["previous_output"])
    before = temporal["previous_content"]
    return previous, linked_motion(
        settings, content, temporal["vectors"],
        load_array(before, "previous content") if before else None, temporal["previous_vectors"],
    )


def temporal_settings(temporal: dict):
    return temporal["options"] or _temporal_options()()


def run_stylize(job: Job) -> dict:
    """Optimise one image (tied to the previous frame when `temporal` is given); writes `output`."""
    f = job.fields
    content = load_array(f["content"], "content")
    styles = [load_array(path, "style") for path in f["styles"]]
    options = f["options"] or StyleOptions()
    every, preview = f["preview_every"] or 0, f["preview"]
    from .regions import for_frame  # torch loads with the first job

    regions = for_frame(f["regions"], *content.shape[:2], len(styles), options, f["mattes"], f["depth_scale"] or 1.0)

    def progress(p) -> None:
        job.progress(p)
        if preview and every > 0 and p.iteration % every == 0 and p.iteration < p.total:
            image = p.image()
            if image is not None:
                save_array(preview, image)
                job.channel.emit("preview", id=job.id, path=preview, iteration=p.iteration)

    if f["temporal"] is not None:
        from .temporal import stylize_frame

        settings = temporal_settings(f["temporal"])
        previous, motion = previous_frame(content, settings, f["temporal"])
        result = stylize_frame(content, styles, options, settings, previous, motion, progress, job.cancel, regions)
    else:
        result = stylize(content, styles, options, progress=progress, cancel=job.cancel, regions=regions)
    save_array(f["output"], result)
    return {"output": f["output"], "shape": list(result.shape)}


def run_fast_train(job: Job) -> dict:
    """Train (or reuse) a fast-mode model in `model_dir` (default: the engine's cache, shared by every job);
    the result is the model's path and whether it was trained now."""
    from .fast.training import models_folder, train  # torch loads with the first job

    f = job.fields
    options = f["options"] or StyleOptions()
    frames = [load_array(path, "frame") if path.endswith(".npy") else path for path in f["frames"]]
    steps = []

    def progress(p) -> None:
        steps.append(p.iteration)
        job.progress(p)

    model = train(frames, load_array(f["style"], "style"), options, f["fast"] or _fast_options()(),
                  f["model_dir"] or models_folder(options), progress, job.cancel)
    return {"output": str(model), "trained": bool(steps)}


def run_fast_apply(job: Job) -> dict:
    """One frame through a trained model, blended with the previous stylized frame when `temporal` says so."""
    from .fast.inference import apply
    from .temporal import blend_previous

    f = job.fields
    content = load_array(f["content"], "content")
    result = apply(f["model"], content, f["device"] or "auto", f["size"])
    if f["temporal"] is not None:
        settings = temporal_settings(f["temporal"])
        previous, motion = previous_frame(content, settings, f["temporal"])
        if settings.enabled and motion is not None and not job.cancel():
            result = blend_previous(result, previous, motion, settings.blend)
    save_array(f["output"], result)
    return {"output": f["output"], "shape": list(result.shape)}


# ---------------------------------------------------------------------------------------------------------------
# The command table


@dataclass(frozen=True)
class Command:
    """A protocol command: its fields (name -> (check, required)) and what runs it.

    Jobs (`job=True`) are queued and run one at a time on the main thread, their
    fields checked when their turn comes; control commands act at once on the
    reader thread.
    """

    schema: dict[str, tuple[Check, bool]]
    handler: Callable
    job: bool = True


def run_stylize_sequence(job: Job) -> dict:
    """A whole shot over a Ray cluster (engine/distributed.py): frames on storage every node sees."""
    from .distributed import stylize_sequence

    f = job.fields
    result = stylize_sequence(
        [Path(p) for p in f["frames"]], [load_array(path, "style") for path in f["styles"]],
        f["options"] or StyleOptions(), f["temporal_options"] or _temporal_options()(), f["output_dir"],
        f["cluster"] or _cluster_options()(), [Path(p) for p in f["vectors"]] if f["vectors"] else None,
        fast=f["fast"], progress=job.progress, cancel=job.cancel, regions=f["regions"],
        mattes=[Path(p) for p in f["mattes"]] if f["mattes"] else None, depth_scale=f["depth_scale"] or 1.0,
    )
    if result.failed:
        names = ", ".join(sorted(result.failed))
        raise EngineError(f"{len(result.failed)} frame(s) could not be made ({names}): {next(iter(result.failed.values()))}")
    return {"outputs": [str(p) for p in result.written], "skipped": [str(p) for p in result.skipped],
            "nodes": result.nodes}


def _cluster_options():
    from .distributed import ClusterOptions

    return ClusterOptions


def run_connect_cluster(job: Job) -> dict:
    """Join the Ray cluster a shot will go to, before the host renders its frames: a wrong address or token is one
    sentence now, not after the render; the connection is kept for the shot."""
    from .distributed import connect

    cluster = job.fields["cluster"]
    ray = connect(cluster.address, cluster.token_file)
    return {"nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def run_check(job: Job) -> dict:
    """Import every requirement of the engine (after an install); `modules`: module -> version, `build`: what
    the installed torch was built for and can use here (`environment.torch_build`)."""
    from .environment import check_requirements, torch_build

    return {"modules": check_requirements(), "build": torch_build()}


def _cancel(commands: "Commands", seq: int, checked: dict) -> bool:
    commands.cancel_before(seq)
    return True


def _ping(commands: "Commands", seq: int, checked: dict) -> bool:
    commands.channel.emit("pong", id=checked["id"])
    return True


def _quit(commands: "Commands", seq: int, checked: dict) -> bool:
    return False  # stop reading: the running job is cancelled and the worker exits


ID = (request_id, False)
COMMANDS: dict[str, Command] = {
    "stylize": Command({
        "id": ID, "content": (pixels, True), "styles": (non_empty_list(pixels), True),
        "options": (options_of(lambda: StyleOptions), False), "output": (output_file, True),
        "preview_every": (whole(0), False), "preview": (output_file, False), "temporal": (TEMPORAL, False),
        "regions": (region_specs, False), "mattes": (input_file, False), "depth_scale": (number(0.05, 1.0), False),
    }, run_stylize),
    "fast_train": Command({
        "id": ID, "frames": (non_empty_list(input_file), True), "style": (pixels, True),
        "options": (options_of(lambda: StyleOptions), False), "fast": (options_of(_fast_options), False),
        "model_dir": (writable_folder, False),
    }, run_fast_train),
    "fast_apply": Command({
        "id": ID, "model": (input_file, True), "content": (pixels, True), "output": (output_file, True),
        "size": (whole(16, MAX_SIDE), False), "device": (choice(DEVICES), False), "temporal": (TEMPORAL, False),
    }, run_fast_apply),
    "stylize_sequence": Command({
        "id": ID, "frames": (non_empty_list(input_file), True), "styles": (non_empty_list(pixels), True),
        "options": (options_of(lambda: StyleOptions), False), "temporal_options": (options_of(_temporal_options), False),
        "cluster": (options_of(_cluster_options), False), "fast": (options_of(_fast_options), False),
        "vectors": (non_empty_list(input_file), False), "output_dir": (writable_folder, True),
        "regions": (shot_region_specs, False), "mattes": (non_empty_list(input_file), False),
        "depth_scale": (number(0.05, 1.0), False),
    }, run_stylize_sequence),
    "connect_cluster": Command({"id": ID, "cluster": (options_of(_cluster_options), True)}, run_connect_cluster),
    "check": Command({"id": ID}, run_check),
    "cancel": Command({"id": ID}, _cancel, job=False),
    "ping": Command({"id": ID}, _ping, job=False),
    "quit": Command({}, _quit, job=False),
}


def _strict_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> tuple[str, dict]:
    """(command name, request) of one line; ValueError when it is not a JSON object with a string `cmd`."""
    message = json.loads(raw, parse_constant=_strict_constant)
    if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
        raise ValueError("not a command object")
    return message.pop("cmd"), message


def readable_id(message: dict):
    """The request's id when it is a usable one (to tag an error), else None."""
    try:
        return request_id(message.get("id"), "id")
    except EngineError:
        return None


class Commands:
    """Reads stdin on a thread; queues jobs and runs control commands at once.

    Every line gets a sequence number.  `cancel` stops every job received
    before it (running or queued) and none after it, so a cancel sent right
    after a request can never be lost or hit the next job.
    """

    def __init__(self, stream: IO[bytes], channel: Channel):
        self._stream = stream
        self.channel = channel
        self.jobs: queue.Queue = queue.Queue()
        self._cancel_seq = -1
        self._thread = threading.Thread(target=self._read, name="worker-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancelled(self, seq: int) -> bool:
        return self._cancel_seq > seq

    def cancel_before(self, seq: int) -> None:
        self._cancel_seq = seq

    def _read(self) -> None:
        seq = 0
        for raw in self._stream:
            seq += 1
            try:
                name, message = parse(raw)
            except (ValueError, UnicodeDecodeError):
                self.channel.emit("error", message=f"bad request line: {raw[:200]!r}")
                continue
            command = COMMANDS.get(name)
            if command is None:
                self.channel.emit("error", id=readable_id(message), message=f"unknown command {name!r}")
            elif command.job:
                self.jobs.put((seq, name, message))
            else:
                try:
                    checked = validate(command.schema, message)
                except EngineError as exc:
                    self.channel.emit("error", id=readable_id(message), message=f"{name}: {exc}")
                    continue
                if not command.handler(self, seq, checked):
                    break
        # quit or end of input (the host went away): stop the running job and leave.
        self.cancel_before(seq + 1)
        self.jobs.put(None)


def run_job(seq: int, name: str, message: dict, commands: Commands) -> None:
    """Check and run one job request; report exactly one of done, error or cancelled."""
    channel, job_id = commands.channel, readable_id(message)
    if commands.cancelled(seq):
        channel.emit("cancelled", id=job_id)
        return
    command = COMMANDS[name]
    started = time.perf_counter()
    try:
        checked = validate(command.schema, message)
        check_outputs(checked)
        job = Job(checked["id"], checked, channel, lambda: commands.cancelled(seq))
        result = command.handler(job)
        channel.emit("done", id=job.id, **result, elapsed=round(time.perf_counter() - started, 3))
    except Cancelled:
        channel.emit("cancelled", id=job_id)
    except EngineError as exc:
        channel.emit("error", id=job_id, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - the host must get one line, the log gets the traceback
        traceback.print_exc(file=sys.stderr)
        channel.emit("error", id=job_id, message=f"internal error in the style engine: {type(exc).__name__}: {exc}")


def main() -> int:
    channel = Channel(claim_stdout())
    commands = Commands(sys.stdin.buffer, channel)
    commands.start()
    start_method = os_rules.use_spawn()  # any process the engine starts is a fresh interpreter, as on Windows
    channel.emit("ready", protocol=PROTOCOL_VERSION, pid=os.getpid(), start_method=start_method)
    while (item := commands.jobs.get()) is not None:
        run_job(*item, commands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
