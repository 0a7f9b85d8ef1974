"""Long jobs as generators of `Status`, driven by the modal operator or by a plain loop.

A task is written once, top to bottom, and yields whenever it waits for the
worker.  Interactive Blender advances it from a window-manager timer (so the
UI stays live); background mode and the Python API run it to the end with
`Task.run()`.  All Blender data changes happen here, on the main thread, and
only once the result exists: a failure or cancel removes what the task made
and leaves the user's images, renders and materials as they were.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable, Generator

import bpy
import numpy as np

from . import animation, image_bridge, materials, motion
from .errors import StyleError
from .worker_client import WorkerClient, WorkerError

# Seconds a blocking run waits for each worker event; the modal path never waits.
SYNC_WAIT = 0.25
# Seconds the worker gets to honour a cancel (it checks once an iteration) before it is killed,
# e.g. while it is still loading a network or downloading weights.
CANCEL_GRACE = 10.0


class TaskCancelled(StyleError):
    def __init__(self):
        super().__init__("cancelled")


@dataclass
class Status:
    text: str
    fraction: float = 0.0


@dataclass
class Style:
    name: str
    pixels: np.ndarray
    weight: float = 1.0


@dataclass
class Job:
    """Everything one run needs, gathered and checked before any work starts (see `api.build_job`)."""

    styles: list[Style]
    options: dict
    source: str = "RENDER"  # RENDER, IMAGE or SEQUENCE
    image: bpy.types.Image | None = None
    sequence_dir: str = ""
    target: str = "IMAGE"  # IMAGE, FILE or TEXTURE
    filepath: str = ""
    obj: bpy.types.Object | None = None
    preview_every: int = 10
    # Animation only.
    out_dir: str = ""
    frames: list[int] = field(default_factory=list)
    load_sequence: bool = False
    add_strip: bool = False
    frame_options: Callable[[animation.FrameInput], dict] | None = None
    # engine.temporal.TemporalOptions fields (as JSON); None or enabled False: frames are independent.
    temporal: dict | None = None
    animation_mode: str = "OPTIMIZE"  # OPTIMIZE or FAST (train once, apply per frame)
    fast: dict | None = None  # engine.fast_options.FastOptions fields (as JSON)


class Task:
    """A running generator plus what the UI shows about it."""

    def __init__(self, client: WorkerClient, make_steps: Callable[["Task"], Generator]):
        self.client = client
        self.wait = SYNC_WAIT
        self.status = Status("starting")
        self.result = None
        self.error: str | None = None
        self.cancelled = False
        self.cancel_requested = False
        self.cancel_time = 0.0
        self.finished = False
        self.idle = False  # the last step found nothing to do (waiting for the worker)
        self.image: bpy.types.Image | None = None  # what the Image Editor should show
        self._steps = make_steps(self)

    def step(self) -> bool:
        """Advance until the task next waits; False once it has finished (see result/error/cancelled)."""
        if self.finished:
            return False
        try:
            status = next(self._steps)
            self.idle = status is None
            if status is not None:
                self.status = status
            return True
        except StopIteration as stop:
            self.result = stop.value
        except TaskCancelled:
            self.cancelled = True
        except StyleError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill a modal operator; cleanup already ran
            traceback.print_exc()
            self.error = f"internal error in the Neural Style add-on: {type(exc).__name__}: {exc}"
        self.finished = True
        return False

    def run(self):
        """Run to the end in this thread (background mode, scripts); raise on error or cancel."""
        while self.step():
            pass
        if self.cancelled:
            raise TaskCancelled()
        if self.error:
            raise StyleError(self.error)
        return self.result

    def cancel(self) -> None:
        """Stop the running request, and any the task would still send."""
        self.cancel_requested = True
        self.cancel_time = time.monotonic()
        if not self.finished:
            try:
                self.client.cancel()
            except WorkerError:
                pass  # the worker is gone; its exit event ends the task

    def close(self) -> None:
        """Stop the generator early (its cleanup runs) and make sure the worker stops working for it."""
        if not self.finished:
            self.cancel()
            self._steps.close()
            self.finished = self.cancelled = True


def run_on_worker(task: Task, content: str, styles: list[str], options: dict, workdir: str,
                  preview_every: int = 0, on_preview: Callable[[np.ndarray], None] | None = None,
                  label: str = "", share: tuple[float, float] = (0.0, 1.0), temporal: dict | None = None):
    """Send one stylize request and follow it to its end; returns the output array.

    `share` is the slice of the task's progress bar this request fills;
    `temporal` is the request's optional temporal field (see `temporal_request`).
    """
    output = os.path.join(workdir, f"{uuid.uuid4().hex}-out.npy")
    preview = output.replace("-out.npy", "-preview.npy")
    job_id = send_job(task, {
        "cmd": "stylize", "content": content, "styles": styles, "options": options,
        "output": output, "preview_every": preview_every if on_preview else 0, "preview": preview,
        **({"temporal": temporal} if temporal else {}),
    })
    event = yield from follow(task, job_id, label, share, on_preview)
    return np.load(event["output"])


def follow(task: Task, job_id: str, label: str = "", share: tuple[float, float] = (0.0, 1.0),
           on_preview: Callable[[np.ndarray], None] | None = None):
    """Follow a sent request to its end; returns its `done` event."""
    start, width = share
    while True:
        event = task.client.next_event(task.wait)
        if event is None:
            if task.cancel_requested and time.monotonic() - task.cancel_time > CANCEL_GRACE:
                task.client.kill()  # the next job starts a fresh worker
                raise TaskCancelled()
            yield None
            continue
        kind = event.get("event")
        if event.get("id") not in (job_id, None) or kind in ("pong", "ready"):
            continue  # left over from an earlier, cancelled job
        if kind == "progress":
            fraction = event["iteration"] / max(event["total"], 1)
            losses = event.get("losses", {})
            loss = f", loss {losses['total']:.4g}" if "total" in losses else ""
            stage = event.get("stage", "")
            text = stage if stage.startswith("training step") else f"iteration {event['iteration']}/{event['total']}"
            yield Status(f"{label}{text}{loss}", start + width * fraction)
        elif kind == "preview" and on_preview:
            on_preview(np.load(event["path"]))
        elif kind == "done":
            return event
        elif kind == "cancelled":
            raise TaskCancelled()
        elif kind in ("error", "exit"):
            raise StyleError(task.client.error_message(event))


def sized_options(options: dict, content: np.ndarray) -> dict:
    """The size setting is a cap: a source smaller than it is processed at its own size."""
    if options.get("size") and options["size"] >= max(content.shape[:2]):
        return {**options, "size": None}
    return options


def fit_to_source(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The engine's output at the source's size, with the source's exact alpha."""
    height, width = source.shape[:2]
    rgba = np.empty_like(source)
    rgba[..., :3] = image_bridge.resize(result[..., :3], width, height)
    rgba[..., 3] = source[..., 3]
    return rgba


def save_styles(styles: list[Style], workdir: str) -> list[str]:
    """Style pixels go to the worker as files once per task, whatever the number of frames."""
    paths = []
    for index, style in enumerate(styles):
        paths.append(os.path.join(workdir, f"style-{index}.npy"))
        np.save(paths[-1], style.pixels)
    return paths


def style_label(styles: list[Style]) -> str:
    return ", ".join(style.name for style in styles)


def read_source(job: Job, workdir: str) -> tuple[str, np.ndarray]:
    """(name, pixels) of the image to stylize."""
    if job.source == "RENDER" or (job.image is not None and job.image.type == "RENDER_RESULT"):
        return "Render", image_bridge.read_render_result(bpy.context.scene, workdir)
    if job.source == "IMAGE":
        if job.image is None:
            raise StyleError("no source image: open an image in the Image Editor or pick one")
        return job.image.name, image_bridge.image_to_array(job.image)
    frame = bpy.context.scene.frame_current
    files = animation.sequence_files(job.sequence_dir)
    if frame not in files:
        raise StyleError(f"the frames folder has no image for the current frame {frame}")
    return os.path.basename(files[frame]), image_bridge.load_image_file(files[frame])


def deliver(job: Job, image: bpy.types.Image) -> None:
    """Put the finished result where the job asked; the image itself is new, so nothing is overwritten."""
    if job.target == "FILE":
        image.filepath_raw = bpy.path.abspath(job.filepath)
        image.file_format = "PNG"
        image.save()
        return
    # Packed, so the result survives saving and reopening the .blend without a separate file.
    image.pack()
    if job.target == "TEXTURE":
        materials.assign_texture(job.obj, image)
    else:
        image.use_fake_user = True


def stylize_image_steps(task: Task, job: Job):
    """Stylize one image into a new image (and a file or material texture)."""
    with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
        yield Status("reading the source")
        name, source = read_source(job, workdir)
        content_path = os.path.join(workdir, "content.npy")
        np.save(content_path, source)
        style_paths = save_styles(job.styles, workdir)
        image = image_bridge.new_image(f"{name} ({style_label(job.styles)})", source.shape[1], source.shape[0])
        task.image = image
        done = False
        try:
            image_bridge.array_to_image(image, source)
            result = yield from run_on_worker(
                task, content_path, style_paths, sized_options(job.options, source), workdir, job.preview_every,
                on_preview=lambda preview: image_bridge.array_to_image(image, fit_to_source(preview, source)),
            )
            image_bridge.array_to_image(image, fit_to_source(result, source))
            deliver(job, image)
            done = True
            return image
        finally:
            if not done:
                task.image = None
                try:
                    bpy.data.images.remove(image)
                except ReferenceError:
                    pass  # already freed with its file (a new .blend was opened mid-run)


def temporal_request(job: Job, frame_input: animation.FrameInput, workdir: str) -> dict | None:
    """The worker request's `temporal` field for a frame: what links it to the stylized previous frame."""
    if not (job.temporal and job.temporal.get("enabled", True)) or frame_input.previous_output is None:
        return None
    previous_content = None
    if frame_input.previous_vectors is None and frame_input.previous_content is not None:
        previous_content = os.path.join(workdir, "previous-content.npy")  # for optical flow
        np.save(previous_content, frame_input.previous_content)
    return {
        "options": job.temporal, "previous_output": frame_input.previous_output, "vectors": frame_input.vectors,
        "previous_vectors": frame_input.previous_vectors, "previous_content": previous_content,
    }


def send_job(task: Task, request: dict) -> str:
    """Send a job request (adding its id) unless the task was cancelled; returns the id."""
    if task.cancel_requested:
        raise TaskCancelled()
    job_id = uuid.uuid4().hex
    task.client.send({**request, "id": job_id})
    return job_id


def train_fast(task: Task, job: Job, frames: list[int], read: animation.FrameReader, style_paths: list[str],
               workdir: str):
    """Read the frames to stylize (training sees them all first) and train, or reuse, the fast-mode model
    in `<out_dir>/.fast/`; returns a reader of the frames already read and the model's path."""
    if len(style_paths) != 1:
        raise StyleError("Fast (trained) mode trains on one style image; remove the others or use Optimize")
    cached = {}
    for index, frame in enumerate(frames, start=1):
        yield Status(f"Frame {index} of {len(frames)}: reading for training")
        cached[frame] = os.path.join(workdir, f"frame-{frame}.npy")
        np.save(cached[frame], read(frame))
    model_dir = os.path.join(job.out_dir, ".fast")
    os.makedirs(model_dir, exist_ok=True)
    job_id = send_job(task, {
        "cmd": "fast_train", "frames": list(cached.values()), "style": style_paths[0], "options": job.options,
        "fast": job.fast or {}, "model_dir": model_dir,
    })
    event = yield from follow(task, job_id, "Training: ")
    return (lambda frame: np.load(cached[frame])), event["output"]


def apply_fast(task: Task, model: str, content: str, options: dict, workdir: str, label: str,
               share: tuple[float, float], temporal: dict | None):
    """One frame through the trained model (blended with the previous one per `temporal`); returns the array."""
    output = os.path.join(workdir, "fast-out.npy")
    job_id = send_job(task, {
        "cmd": "fast_apply", "model": model, "content": content, "output": output,
        "size": options.get("size"), "device": options.get("device"), **({"temporal": temporal} if temporal else {}),
    })
    event = yield from follow(task, job_id, label, share)
    return np.load(event["output"])


def stylize_animation_steps(task: Task, job: Job):
    """Stylize each frame into `frame_####.png`, skipping frames already written; returns the written paths."""
    os.makedirs(job.out_dir, exist_ok=True)
    todo = animation.pending_frames(job.out_dir, job.frames)
    total, skipped = len(job.frames), len(job.frames) - len(todo)
    scene = bpy.context.scene
    playhead = scene.frame_current  # rendering moves it; put it back afterwards
    from_folder = job.source == "SEQUENCE"
    with_vectors = bool(job.temporal and job.temporal.get("enabled", True)) and not from_folder
    saved = motion.enable_motion_passes(scene) if with_vectors and todo else None
    try:
        with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
            if from_folder:
                read = animation.sequence_reader(job.sequence_dir)
            else:
                motion_dir = job.out_dir if saved is not None else None
                if motion_dir is not None:
                    os.makedirs(os.path.dirname(animation.motion_path(motion_dir, 0)), exist_ok=True)
                read = animation.render_reader(scene, workdir, motion_dir)
            style_paths = save_styles(job.styles, workdir)
            content_path = os.path.join(workdir, "content.npy")
            model = None
            if job.animation_mode == "FAST" and todo:
                read, model = yield from train_fast(task, job, todo, read, style_paths, workdir)
            kept = {}  # frame -> pixels of the frame just done, for the next frame's optical flow
            for position, frame in enumerate(todo, start=skipped):
                label = f"Frame {position + 1} of {total}: "
                yield Status(f"{label}{'reading' if from_folder else 'rendering'}", position / total)
                frame_input = animation.frame_input(
                    frame, read, job.out_dir, scene.frame_step, kept.get(frame - scene.frame_step), saved is not None)
                np.save(content_path, frame_input.content)
                options = sized_options(job.options, frame_input.content)
                if job.frame_options:
                    options = {**options, **job.frame_options(frame_input)}
                share = (position / total, 1 / total)
                temporal = temporal_request(job, frame_input, workdir)
                if model is not None:
                    result = yield from apply_fast(task, model, content_path, options, workdir, label, share, temporal)
                else:
                    result = yield from run_on_worker(
                        task, content_path, style_paths, options, workdir, label=label, share=share, temporal=temporal)
                image_bridge.save_png(fit_to_source(result, frame_input.content), animation.frame_path(job.out_dir, frame))
                kept = {frame: frame_input.content}
    finally:
        if saved is not None:
            motion.restore_settings(scene, saved)
        if scene.frame_current != playhead:
            scene.frame_set(playhead)
    paths = [animation.frame_path(job.out_dir, frame) for frame in job.frames]
    if job.load_sequence or job.add_strip:
        task.image = animation.load_result(scene, job.out_dir, job.frames, job.add_strip)
    return paths
