"""Fast mode judged against the optimisation: style, content and stripes on held-out pictures, time, flicker.

A fast-mode network is trained with the default settings (engine.fast.options.FastOptions) on training frames,
then judged on held-out pictures it never saw, side by side with the optimisation's result (`stylize`, default
options) for the same picture and style:

- style and content distance by one judge for both (benchmarks/judge.py: packaged VGG-16, relative Gram error
  over relu1_1..relu5_1 and relative feature error at relu4_2);
- periodic artifacts (`periodic_peak`): stripes and ringing are one spatial frequency repeated, so they stand
  out as a narrow peak in the image's 1-D power spectra (columns and rows, averaged) above the smooth power law
  every photograph and painting follows; the measure is that peak's height, given relative to the content's;
- training time (wall and CPU seconds, with the load average), and apply time per 512 px frame through
  onnxruntime on the CPU;
- on a rendered animation (benchmarks/demo_scene.py), flicker and follow as benchmarks/bench_temporal.py
  measures them, for independent fast-mode frames and for fast mode with temporal coherence (the blend of the
  warped previous result, engine/fast/inference.py).

Pictures, all offline: training frames and held-out pictures are photographs that ship with Blender (bpy's
CC0 studio-light panoramas, benchmarks/held_out.py), the style is benchmarks/speed_images.py's procedural brush
strokes; no test uses any of them.  Writes docs/bench/fast.json and docs/fast-mode-quality.png.

Run from the repository root: `python -m benchmarks.bench_fast [--size 256] [--steps N] ...`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.cli.common import run_command
from engine.fast.inference import apply
from engine.fast.options import SEQUENCE_BLEND, WIDTHS, FastOptions
from engine.fast.training import train
from engine.images import resize
from engine.options import StyleOptions
from engine.pipeline import stylize

from . import machine, timings, write_json

# bpy's studio-light panoramas (benchmarks/held_out.py): the network trains on the first set and is judged on the
# second, which it never sees.
TRAINING_VIEWS = ("city", "interior", "night", "studio", "sunrise")
HELD_OUT_VIEWS = ("courtyard", "forest", "sunset")
# The targets of issue 23, as ratios to the optimisation's (style, content) and to the content's (artifacts).
TARGETS = {"style": 2.0, "content": 1.5, "artifact": 1.2}


def periodic_peak(image: np.ndarray, longest: float = 64.0, shortest: float = 2.5) -> float:
    """How far the strongest single spatial frequency stands out: 1 for a smooth spectrum, large for stripes.

    The grey image's columns and rows are Hann-windowed and their power spectra averaged (one spectrum of
    vertical, one of horizontal frequencies); a power law is fitted to each between periods of `longest` and
    `shortest` pixels (log-log least squares, on the spectrum smoothed over 3 bins), and the measure is the
    largest ratio of spectrum to fit over both.  Stripes or ringing at one period (also diagonal ones, which
    show in both spectra) make a narrow peak many times the fit; photographs and paintings stay near 1-3.
    """
    grey = np.asarray(image, np.float64)[..., :3].mean(axis=2)
    worst = 0.0
    for lines in (grey, grey.T):  # columns: vertical frequencies; rows: horizontal ones
        n = lines.shape[0]
        if n < 2 * longest:
            raise ValueError(f"periodic_peak needs at least {2 * longest:.0f} pixels per side, got {n}")
        windowed = (lines - lines.mean(axis=0)) * np.hanning(n)[:, None]
        power = (np.abs(np.fft.rfft(windowed, axis=0)) ** 2).mean(axis=1)
        power = np.convolve(power, np.ones(3) / 3, mode="same")
        freq = np.arange(len(power)) / n
        band = (freq >= 1 / longest) & (freq <= 1 / shortest)
        log_f, log_p = np.log(freq[band]), np.log(power[band] + 1e-20)
        slope, offset = np.polyfit(log_f, log_p, 1)
        worst = max(worst, float(np.exp((log_p - (offset + slope * log_f)).max())))
    return worst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_fast", description=__doc__.split("\n\n")[0])
    f = FastOptions()
    p.add_argument("--size", type=int, default=256, help="longest side of the held-out pictures")
    p.add_argument("--iterations", type=int, default=StyleOptions().iterations, help="the optimisation's")
    p.add_argument("--steps", type=int, default=f.steps, help="fast-mode training steps")
    p.add_argument("--crop", type=int, default=f.crop)
    p.add_argument("--learning-rate", type=float, default=f.learning_rate)
    p.add_argument("--residual-blocks", type=int, default=f.residual_blocks)
    p.add_argument("--width", choices=sorted(WIDTHS), default=f.width)
    p.add_argument("--style-weight", type=float, default=StyleOptions().style_weight,
                   help="the style weight of training (the optimisation keeps the default)")
    p.add_argument("--weights", default="packaged", help="loss network weights (the judge always uses packaged)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--apply-size", type=int, default=512, help="frame side for the apply timing")
    p.add_argument("--repeat", type=int, default=5, help="apply timings (best of)")
    p.add_argument("--frames", type=int, default=6, help="frames of the rendered animation (0: skip it)")
    p.add_argument("--blend", type=float, default=SEQUENCE_BLEND, help="fast mode's temporal blend")
    p.add_argument("--json-out", default="docs/bench/fast.json")
    p.add_argument("--picture", default="docs/fast-mode-quality.png")
    p.add_argument("--models", help="folder to keep the trained model in (default: a temporary one)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(report, build_parser().parse_args(argv), "bench_fast")


def held_out(name: str, longest: int) -> np.ndarray:
    from .held_out import panorama

    image = panorama(name)
    h, w = image.shape[:2]
    factor = longest / max(h, w)
    return resize(image, max(16, round(h * factor)), max(16, round(w * factor)))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_timed(style: np.ndarray, options: StyleOptions, fast: FastOptions, folder: Path, size: int) -> dict:
    """Train on the training views (at the held-out pictures' size); wall and CPU seconds, load average."""
    frames = [held_out(name, size) for name in TRAINING_VIEWS]
    load, wall, cpu = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    model = train(frames, style, options, fast, folder, retrain=True)
    return {"model": str(model), "seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1),
            "load_average_start_end": [round(load, 2), round(os.getloadavg()[0], 2)]}


def judge_pictures(model: Path, style: np.ndarray, options: StyleOptions, args) -> tuple[list[dict], dict]:
    """Each held-out picture stylized both ways and judged; the rows and the pictures."""
    from .judge import Judge

    rows, pictures = [], {}
    for name in HELD_OUT_VIEWS:
        content = held_out(name, args.size)
        fast = apply(model, content, "cpu")
        start = time.perf_counter()
        optimised = stylize(content, [style], options.replace(iterations=args.iterations))
        seconds = time.perf_counter() - start
        judge = Judge(content, style)
        row = {"picture": name, "size": f"{content.shape[1]}x{content.shape[0]}",
               "optimisation_seconds": round(seconds, 1)}
        for method, picture in (("fast", fast), ("optimisation", optimised)):
            scores = judge(picture)
            row[method] = {"style": round(scores["style"], 4), "content": round(scores["content"], 4),
                           "periodic_peak": round(periodic_peak(picture), 3)}
        row["content_periodic_peak"] = round(periodic_peak(content), 3)
        row["ratios"] = {
            "style": round(row["fast"]["style"] / row["optimisation"]["style"], 3),
            "content": round(row["fast"]["content"] / row["optimisation"]["content"], 3),
            "artifact": round(row["fast"]["periodic_peak"] / row["content_periodic_peak"], 3),
            "optimisation_artifact": round(row["optimisation"]["periodic_peak"] / row["content_periodic_peak"], 3),
        }
        rows.append(row)
        pictures[name] = (content, optimised, fast)
    return rows, pictures


def apply_speed(model: Path, side: int, repeat: int) -> dict:
    """Best and median seconds of `apply` on one side x side frame (after a warm-up)."""
    frame = held_out(HELD_OUT_VIEWS[0], side)
    frame = resize(frame, side, side)
    times = timings(lambda: apply(model, frame, "cpu"), repeat)
    return {"size": f"{side}x{side}", "seconds_best": round(min(times), 4),
            "seconds_median": round(float(np.median(times)), 4)}


def temporal_rows(model: Path, frames: int, blend: float, work: Path) -> dict:
    """Flicker and follow of fast mode on the rendered demo animation, frames independent and blended."""
    from engine.temporal import TemporalOptions, blend_previous, frame_motion, read_frame

    from .bench_temporal import follow, render_demo, static_flicker, warping_error

    paths = render_demo(work / "frames", 192, 128, frames, 6)
    truth = [read_frame(path) for path in paths]
    contents = [frame.content[..., :3] for frame in truth]
    independent = [apply(model, content, "cpu") for content in contents]
    temporal = TemporalOptions(blend=blend)
    blended = [independent[0]]
    for i in range(1, len(truth)):
        blended.append(blend_previous(independent[i], blended[-1], frame_motion(truth[i - 1], truth[i], temporal),
                                      blend))
    base_flicker, base_follow = static_flicker(independent, contents), follow(independent, contents)
    results = {}
    for name, images in (("fast, independent", independent), (f"fast, blend {blend}", blended)):
        flicker, followed = static_flicker(images, contents), follow(images, contents)
        results[name] = {"static_flicker": round(flicker, 5), "static_flicker_ratio": round(flicker / base_flicker, 3),
                         "follow": round(followed, 5), "follow_ratio": round(followed / base_follow, 3),
                         "warping_error": round(warping_error(images, truth), 6)}
    return {"frames": len(paths), "size": "192x128", "results": results}


def save_picture(pictures: dict, style: np.ndarray, path: str | Path) -> Path:
    """One row per held-out picture: content, optimisation, fast mode; the style at the end of the first row."""
    from PIL import Image, ImageDraw

    from engine.files import atomic_write

    rows = []
    for content, optimised, fast in pictures.values():
        h, w = content.shape[:2]
        rows.append(np.concatenate([content, optimised[..., :3], fast[..., :3], resize(style[..., :3], h, h)], axis=1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1) for r in rows])
    header = 16
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + header), "white")
    canvas.paste(Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)), (0, header))
    draw = ImageDraw.Draw(canvas)
    w = next(iter(pictures.values()))[0].shape[1]
    for i, label in enumerate(("held-out content", "optimisation (stylize)", "fast mode", "style")):
        draw.text((i * w + 4, 2), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def report(args: argparse.Namespace) -> int:
    """Train, judge, time; print the table, write the JSON and the picture."""
    from .speed_images import brush_strokes

    style = brush_strokes(args.size)
    options = StyleOptions(weights=args.weights, seed=args.seed)
    fast = FastOptions(steps=args.steps, crop=args.crop, learning_rate=args.learning_rate,
                       residual_blocks=args.residual_blocks, width=args.width)
    result = {"machine": machine(), "options": options.to_dict(), "fast": fast.to_dict(), "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="neural-style-bench-fast-") as tmp:
        folder = Path(args.models or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        training_options = options.replace(style_weight=args.style_weight)
        result["training"] = training = train_timed(style, training_options, fast, folder, args.size)
        training["style_weight"] = args.style_weight
        model = Path(training["model"])
        result["pictures"], pictures = judge_pictures(model, style, options.replace(size=None), args)
        result["apply"] = apply_speed(model, args.apply_size, args.repeat)
        if args.frames:
            result["animation"] = temporal_rows(model, args.frames, args.blend, Path(tmp))
    result["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    print_table(result)
    print(f"wrote {write_json(result, args.json_out)} and {save_picture(pictures, style, args.picture)}")
    return 0


def print_table(result: dict) -> None:
    print(f"{'picture':<11}{'size':>9}{'style fast':>12}{'optim.':>9}{'ratio':>7}{'content fast':>14}{'optim.':>8}"
          f"{'ratio':>7}{'peak fast':>11}{'optim.':>8}{'content':>9}{'ratio':>7}")
    for r in result["pictures"]:
        f, o, x = r["fast"], r["optimisation"], r["ratios"]
        print(f"{r['picture']:<11}{r['size']:>9}{f['style']:>12.4f}{o['style']:>9.4f}{x['style']:>7.2f}"
              f"{f['content']:>14.3f}{o['content']:>8.3f}{x['content']:>7.2f}{f['periodic_peak']:>11.2f}"
              f"{o['periodic_peak']:>8.2f}{r['content_periodic_peak']:>9.2f}{x['artifact']:>7.2f}")
    t = result["training"]
    print(f"training: {t['seconds']} s wall, {t['cpu_seconds']} s CPU (user+sys), load {t['load_average_start_end']}")
    a = result["apply"]
    print(f"apply, {a['size']}, onnxruntime CPU: best {a['seconds_best']} s, median {a['seconds_median']} s")
    for name, e in result.get("animation", {}).get("results", {}).items():
        print(f"{name:<22} static flicker {e['static_flicker']:.4f} ({e['static_flicker_ratio']:.2f}x), follow "
              f"{e['follow']:.3f} ({e['follow_ratio']:.2f}x), warping error {e['warping_error']:.5f}")


if __name__ == "__main__":
    sys.exit(main())
