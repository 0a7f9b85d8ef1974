"""What a run will cost on this machine: measured seconds per iteration, by device, model and size.

Each finished optimisation request leaves one measurement (the worker's `done`
event: its time, its result's size, the iterations asked) in `timings.json` in
the add-on's user folder.  `estimate` scales the measurement nearest in size
to the size asked for (an iteration's work grows with the pixel count), so the
panel can say "about 4 min" before a long run.  Nothing is estimated before
the first run on a device and model: the panel then shows the run's size only.
"""

from __future__ import annotations

import json
import math
import os

from . import os_rules, preferences

FILE = "timings.json"
# Measurements kept per device and model (the most recent sizes).
KEPT = 16


def _path(folder: str | None) -> str:
    return os.path.join(folder or preferences.user_dir(), FILE)


def load(folder: str | None = None) -> dict[str, dict[str, float]]:
    """{"device/model": {pixel count: seconds per iteration}}; empty when nothing was measured (or unreadable)."""
    try:
        with open(_path(folder), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def key(options: dict) -> str:
    return f"{options.get('device') or 'auto'}/{options.get('model') or 'vgg16'}"


def record(options: dict, done: dict, folder: str | None = None) -> None:
    """Keep the speed of one finished `stylize` request (its options and `done` event); never raises."""
    try:
        height, width = done["shape"][:2]
        per_iteration = float(done["elapsed"]) / max(int(options["iterations"]), 1)
    except (KeyError, TypeError, ValueError):
        return
    if not (per_iteration > 0 and math.isfinite(per_iteration)):
        return
    data = load(folder)
    samples = data.setdefault(key(options), {})
    pixels = str(int(width * height))
    before = samples.pop(pixels, None)  # re-inserted last: the most recent sizes are kept
    samples[pixels] = per_iteration if before is None else (before + per_iteration) / 2
    while len(samples) > KEPT:
        samples.pop(next(iter(samples)))
    path = _path(folder)
    try:
        with open(path + ".partial", "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os_rules.replace_file(path + ".partial", path)
    except OSError:
        pass  # an estimate is a nicety: a read-only user folder must not fail the run


def record_training(options: dict, model: str) -> None:
    """Keep the speed of a fast-mode training from the model's `.json` (written by the engine with the time
    the training took, also when the model is reused); never raises."""
    try:
        with open(os.path.splitext(model)[0] + ".json", encoding="utf-8") as fh:
            info = json.load(fh)
        fast = info["fast"]
        done = {"shape": [fast["crop"], fast["crop"] * fast["batch_size"]], "elapsed": info["train_seconds"]}
        record({**options, "model": f"{options.get('model') or 'vgg16'}/train", "iterations": fast["steps"]}, done)
    except (OSError, ValueError, KeyError, TypeError):
        return


def training_seconds(options: dict, steps: int, folder: str | None = None) -> float | None:
    """Seconds a fast-mode training of `steps` takes, from the last one measured; None before any."""
    samples = load(folder).get(key({**options, "model": f"{options.get('model') or 'vgg16'}/train"}), {})
    return float(list(samples.values())[-1]) * steps if samples else None


def seconds_per_iteration(options: dict, pixels: int, folder: str | None = None) -> float | None:
    """Seconds one iteration takes at `pixels`, from the nearest measured size; None before any measurement."""
    samples = load(folder).get(key(options), {})
    measured = [(int(count), float(seconds)) for count, seconds in samples.items() if int(count) > 0]
    if not measured or pixels <= 0:
        return None
    count, seconds = min(measured, key=lambda sample: abs(math.log(sample[0] / pixels)))
    return seconds * pixels / count


def processing_size(width: int, height: int, cap: int) -> tuple[int, int]:
    """The size a source is optimised at: its longest side capped at `cap` (0: no cap), aspect kept."""
    longest = max(width, height, 1)
    scale = cap / longest if cap and longest > cap else 1.0
    return max(1, round(width * scale)), max(1, round(height * scale))


def describe(seconds: float) -> str:
    """"about 40 s", "about 3 min", "about 2.5 h"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
