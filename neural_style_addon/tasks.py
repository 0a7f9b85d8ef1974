"""The steps of the add-on's jobs: generators that a `runner.Task` drives.

Each is written once, top to bottom, and yields a `Status` (or None) whenever
it waits for the worker (see `runner`).  All Blender data changes happen
here, on the main thread, and only once the result exists: a failure or cancel
removes what the task made and leaves the user's images, renders and materials
as they were.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Callable

import bpy
import numpy as np

from . import animation, folder_record, image_bridge, materials, mattes, motion, timings
from .errors import StyleError
from .job import Job, Status, Style
from .runner import Task, follow, send_job


def run_on_worker(task: Task, content: str, styles: list[str], options: dict, workdir: str,
                  preview_every: int = 0, on_preview: Callable[[np.ndarray], None] | None = None,
                  label: str = "", share: tuple[float, float] = (0.0, 1.0), temporal: dict | None = None,
                  regions: list[dict] | None = None, mattes_exr: str | None = None, depth_scale: float = 1.0):
    """Send one stylize request and follow it to its end; returns the output array.

    `share` is the slice of the task's progress bar this request fills;
    `temporal` is the request's optional temporal field (see `temporal_request`);
    `regions` and `mattes_exr` limit styles to objects or materials, `depth_scale` below 1 shrinks the
    strokes with distance (see `mattes`).
    """
    output = os.path.join(workdir, f"{uuid.uuid4().hex}-out.npy")
    preview = output.replace("-out.npy", "-preview.npy")
    job_id = send_job(task, {
        "cmd": "stylize", "content": content, "styles": styles, "options": options,
        "output": output, "preview_every": preview_every if on_preview else 0, "preview": preview,
        **({"temporal": temporal} if temporal else {}),
        **({"regions": regions} if regions else {}),
        **({"depth_scale": depth_scale} if depth_scale < 1 else {}),
        **({"mattes": mattes_exr} if mattes_exr else {}),
    })
    event = yield from follow(task, job_id, label, share, on_preview)
    timings.record(options, event)  # this machine's speed, for the panel's cost estimate
    return np.load(event["output"])


def sized_options(options: dict, content: np.ndarray) -> dict:
    """The size setting is a cap: a source smaller than it is processed at its own size."""
    if options.get("size") and options["size"] >= max(content.shape[:2]):
        return {**options, "size": None}
    return options


def fit_to_source(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The engine's output at the source's size, with the source's exact alpha."""
    height, width = source.shape[:2]
    rgba = np.empty_like(source)
    rgba[..., :3] = image_bridge.resize(result[..., :3], height, width)
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


def from_render(job: Job) -> bool:
    """Whether the job's source is the scene's Render Result (a camera view of the scene)."""
    return job.source == "RENDER" or (job.image is not None and job.image.type == "RENDER_RESULT")


def render_mattes(scene: bpy.types.Scene, wanted: set[str], workdir: str, depth: bool = False) -> str:
    """Render the current frame again with the Cryptomatte passes `wanted` (and the Depth pass with `depth`)
    on, restored afterwards, and save every pass as a multilayer EXR; returns its path.  The Render Result
    then holds this render."""
    saved = mattes.enable_passes(scene, wanted, depth)
    try:
        with animation.scene_only(scene):
            bpy.ops.render.render(scene=scene.name)
        return motion.save_motion_exr(scene, os.path.join(workdir, "mattes.exr"))
    finally:
        mattes.restore_passes(scene, saved)


def read_source(job: Job, workdir: str) -> tuple[str, np.ndarray]:
    """(name, pixels) of the image to stylize."""
    if from_render(job):
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
        try:
            image.save()
        except RuntimeError as exc:  # checked before the work started (api.check_job), but disks fill up
            raise StyleError(f"could not write {image.filepath_raw}: {str(exc).strip()}") from None
        return
    # Packed, so the result survives saving and reopening the .blend without a separate file.
    image.pack()
    if job.target == "TEXTURE":
        # A render is put back where the camera saw it; another image uses the object's UVs.
        materials.assign_texture(job.obj, image, bpy.context.scene if from_render(job) else None)
    else:
        image.use_fake_user = True


def stylize_image_steps(task: Task, job: Job):
    """Stylize one image into a new image (and a file or material texture)."""
    with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
        regions, mattes_exr = mattes.region_specs(job.styles), None
        if mattes.needs_passes(job):
            yield Status("rendering the masks and depth")
            mattes_exr = render_mattes(bpy.context.scene, mattes.kinds(job.styles), workdir, job.depth_scale < 1)
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
                regions=regions, mattes_exr=mattes_exr, depth_scale=job.depth_scale,
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


# Fast mode's share of the progress bar: training's estimated seconds against about this much per frame.
FAST_FRAME_SECONDS = 1.0
# Training's estimate before any training was measured on this machine (a CPU default, docs/onnx-and-fast-mode.md).
FAST_TRAINING_SECONDS = 240.0


def training_share(job: Job, frames: int) -> float:
    """The part of the progress bar training fills before `frames` frames are applied."""
    steps = (job.fast or {}).get("steps", 300)
    seconds = timings.training_seconds(job.options, steps) or FAST_TRAINING_SECONDS
    return seconds / (seconds + frames * FAST_FRAME_SECONDS)


def train_fast(task: Task, job: Job, frames: list[int], read: animation.FrameReader, style_paths: list[str],
               workdir: str, share: float):
    """Read the frames to stylize (training sees them all first) and train, or reuse, the fast-mode model in
    the engine's model cache (one per style and settings, shared by every output folder and .blend file);
    training fills the first `share` of the progress bar.  Returns a reader of the frames already read, the
    model's path and whether it was trained now."""
    if len(style_paths) != 1:
        raise StyleError("Fast (trained) mode trains on one style image; remove the others or use Optimize")
    cached = {}
    for index, frame in enumerate(frames, start=1):
        label = f"Frame {index} of {len(frames)}: "
        yield Status(f"{label}reading for training", 0.0, label)
        cached[frame] = os.path.join(workdir, f"frame-{frame}.npy")
        np.save(cached[frame], read(frame))
    job_id = send_job(task, {
        "cmd": "fast_train", "frames": list(cached.values()), "style": style_paths[0], "options": job.options,
        "fast": job.fast or {},
    })
    event = yield from follow(task, job_id, "Training: ", (0.0, share))
    timings.record_training(job.options, event["output"])  # training speed, for the panel's cost estimate
    return (lambda frame: np.load(cached[frame])), event["output"], event.get("trained", True)


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


def frame_fingerprints(job: Job, scene: bpy.types.Scene) -> dict[int, str]:
    """frame -> a fingerprint of everything that decides how the frame is stylized (see `folder_record`)."""
    settings = folder_record.fingerprint(
        [(folder_record.fingerprint(style.pixels), style.weight, style.limit) for style in job.styles],
        job.depth_scale,
        {key: value for key, value in job.options.items() if key != "device"},  # same looks on any device
        job.temporal if job.temporal and job.temporal.get("enabled", True) else None,
        job.animation_mode, job.fast if job.animation_mode == "FAST" else None,
    )
    if job.source == "SEQUENCE":
        files = animation.sequence_files(job.sequence_dir)
        sources = {frame: [files.get(frame)] + ([os.path.getsize(files[frame]), os.path.getmtime(files[frame])]
                                                if frame in files else []) for frame in job.frames}
    else:
        render = scene.render
        camera = [scene.name, scene.camera.name if scene.camera else None, render.resolution_x,
                  render.resolution_y, render.resolution_percentage, scene.frame_step]
        sources = {frame: camera for frame in job.frames}
    return {frame: folder_record.fingerprint(settings, job.source, sources[frame]) for frame in job.frames}


def frames_to_do(job: Job, fingerprints: dict[int, str]) -> list[int]:
    """The frames to stylize: all of them to overwrite, else those not made with these settings (resume)."""
    if job.existing_frames == "OVERWRITE":
        return list(job.frames)
    made = folder_record.load(job.out_dir)
    pending = set(animation.pending_frames(job.out_dir, job.frames))  # missing or damaged files
    return [frame for frame in job.frames if frame in pending or made.get(frame) != fingerprints[frame]]


def stylize_on_cluster(task: Task, job: Job, todo: list[int], read: animation.FrameReader, style_paths: list[str],
                       fingerprints: dict[int, str], made: dict, with_vectors: bool, passes_dir: str | None):
    """The whole shot as one `stylize_sequence` job on a Ray cluster (engine/distributed.py).

    The frames are rendered (or read) first, all of them, into `<out_dir>/.shot/` as 8-bit sRGB PNGs that every
    node can read (out_dir must be shared storage; the Vector/Depth and Cryptomatte passes are in
    `<out_dir>/.motion/`, `passes_dir`, as each frame is rendered).  Styles limited to objects or materials and Far
    Stroke Size go along as the job's regions, each frame's masks from its own render.
    The cluster writes its results beside them; each is fitted to its source and saved as `frame_####.png`
    like a frame made here, and `.shot/` is removed once every frame is in place.
    """
    cluster = {"address": job.ray_address, "token_file": job.ray_token_file or None}
    job_id = send_job(task, {"cmd": "connect_cluster", "cluster": cluster})  # a wrong address: before any render
    yield from follow(task, job_id, "Cluster: connecting ")
    shot = os.path.join(job.out_dir, ".shot")
    results = os.path.join(shot, "stylized")
    os.makedirs(results, exist_ok=True)
    frames, renders, contents = [], [], {}
    for index, frame in enumerate(todo, start=1):
        label = f"Frame {index} of {len(todo)}: "
        yield Status(f"{label}{'reading' if job.source == 'SEQUENCE' else 'rendering'} for the cluster", 0.0, label)
        contents[frame] = animation.frame_path(shot, frame)
        image_bridge.save_png(read(frame), contents[frame])
        frames.append(contents[frame])
        if passes_dir is not None:
            renders.append(animation.motion_path(passes_dir, frame))
    regions = mattes.region_specs(job.styles)
    temporal = job.temporal if job.temporal and job.temporal.get("enabled", True) else {"enabled": False}
    job_id = send_job(task, {
        "cmd": "stylize_sequence", "frames": frames, "styles": style_paths, "options": job.options,
        "temporal_options": temporal, "cluster": cluster, "output_dir": results,
        **({"vectors": renders} if with_vectors else {}),
        **({"regions": regions} if regions else {}),
        **({"mattes": renders, "depth_scale": job.depth_scale} if mattes.needs_passes(job) else {}),
        **({"fast": job.fast or {}} if job.animation_mode == "FAST" else {}),
    })
    yield from follow(task, job_id, "Cluster: ")
    for frame in todo:
        source = image_bridge.load_image_file(contents[frame])
        result = image_bridge.load_image_file(os.path.join(results, os.path.basename(contents[frame])))
        image_bridge.save_png(fit_to_source(result, source), animation.frame_path(job.out_dir, frame))
        made[frame] = fingerprints[frame]
    folder_record.save(job.out_dir, made)
    shutil.rmtree(shot, ignore_errors=True)


def stylize_animation_steps(task: Task, job: Job):
    """Stylize each frame into `frame_####.png`, keeping frames already made with the same settings
    (unless the job overwrites them); returns the paths of all the range's frames."""
    os.makedirs(job.out_dir, exist_ok=True)
    scene = bpy.context.scene
    fingerprints = frame_fingerprints(job, scene)
    todo = frames_to_do(job, fingerprints)
    made = folder_record.load(job.out_dir)  # each frame's entry changes once its new file is in place
    total, skipped = len(job.frames), len(job.frames) - len(todo)
    playhead = scene.frame_current  # rendering moves it; put it back afterwards
    from_folder = job.source == "SEQUENCE"
    with_vectors = bool(job.temporal and job.temporal.get("enabled", True)) and not from_folder
    saved = motion.enable_motion_passes(scene) if with_vectors and todo else None
    regions, passes = mattes.region_specs(job.styles), mattes.needs_passes(job)
    mattes_saved = mattes.enable_passes(scene, mattes.kinds(job.styles), job.depth_scale < 1) if passes and todo else None
    try:
        with tempfile.TemporaryDirectory(prefix="neural-style-") as workdir:
            passes_dir = None  # where each render's passes are saved (vectors, depth, Cryptomatte)
            if from_folder:
                read = animation.sequence_reader(job.sequence_dir)
            else:  # a cluster reads the passes too: they go beside the frames, on shared storage
                passes_dir = job.out_dir if saved is not None or (passes and job.ray_address) else \
                    workdir if passes else None
                if passes_dir is not None:
                    os.makedirs(os.path.dirname(animation.motion_path(passes_dir, 0)), exist_ok=True)
                read = animation.render_reader(scene, workdir, passes_dir)
            style_paths = save_styles(job.styles, workdir)
            content_path = os.path.join(workdir, "content.npy")
            model, start = None, 0.0  # frames fill the progress bar from `start`
            if job.ray_address and todo:
                yield from stylize_on_cluster(task, job, todo, read, style_paths, fingerprints, made,
                                              saved is not None, passes_dir)
                todo = []
            if job.animation_mode == "FAST" and todo:
                share = training_share(job, len(todo))
                read, model, trained = yield from train_fast(task, job, todo, read, style_paths, workdir, share)
                start = share if trained else 0.0
            kept = {}  # frame -> pixels of the frame just done, for the next frame's optical flow
            for position, frame in enumerate(todo, start=skipped):
                label = f"Frame {position + 1} of {total}: "
                share = (start + (1 - start) * position / total, (1 - start) / total)
                yield Status(f"{label}{'reading' if from_folder else 'rendering'}", share[0], label)
                frame_input = animation.frame_input(
                    frame, read, job.out_dir, scene.frame_step, kept.get(frame - scene.frame_step), saved is not None)
                np.save(content_path, frame_input.content)
                options = sized_options(job.options, frame_input.content)
                if job.frame_options:
                    options = {**options, **job.frame_options(frame_input)}
                temporal = temporal_request(job, frame_input, workdir)
                if model is not None:
                    result = yield from apply_fast(task, model, content_path, options, workdir, label, share, temporal)
                else:
                    result = yield from run_on_worker(
                        task, content_path, style_paths, options, workdir, label=label, share=share, temporal=temporal,
                        regions=regions, mattes_exr=animation.motion_path(passes_dir, frame) if passes else None,
                        depth_scale=job.depth_scale)
                image_bridge.save_png(fit_to_source(result, frame_input.content), animation.frame_path(job.out_dir, frame))
                made[frame] = fingerprints[frame]
                folder_record.save(job.out_dir, made)
                kept = {frame: frame_input.content}
    finally:  # in the reverse order of turning them on: both may have turned on the Depth pass
        if mattes_saved is not None:
            mattes.restore_passes(scene, mattes_saved)
        if saved is not None:
            motion.restore_settings(scene, saved)
        if scene.frame_current != playhead:
            scene.frame_set(playhead)
    paths = [animation.frame_path(job.out_dir, frame) for frame in job.frames]
    if job.load_sequence or job.add_strip:
        task.image = animation.load_result(scene, job.out_dir, job.frames, job.add_strip)
    return paths
