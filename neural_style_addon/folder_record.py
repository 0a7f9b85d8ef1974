"""What made each frame in an animation output folder: `<folder>/.neural_style.json`.

Stylize Animation writes one fingerprint per frame (a hash of the style
pixels and weights, the engine options, the temporal and fast-mode settings
and where the frame came from) after the frame's PNG is in place.  A rerun
with *Resume* keeps only frames whose recorded fingerprint matches the new
run's; *Overwrite* stylizes every frame again.  Frames the record does not
know (no record, or written by something else) are stylized again.
"""

from __future__ import annotations

import hashlib
import json
import os

from . import os_rules

RECORD_NAME = ".neural_style.json"
VERSION = 1


def record_path(folder: str) -> str:
    return os.path.join(folder, RECORD_NAME)


def fingerprint(*parts) -> str:
    """A stable hash of JSON-able parts and arrays (anything with `tobytes`)."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "tobytes"):
            digest.update(repr((part.shape, str(part.dtype))).encode())
            digest.update(part.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def load(folder: str) -> dict[int, str]:
    """frame -> fingerprint of the frames recorded in `folder` (empty when there is no readable record)."""
    try:
        with open(record_path(folder), encoding="utf-8") as fh:
            data = json.load(fh)
        return {int(frame): str(value) for frame, value in data.get("frames", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def save(folder: str, frames: dict[int, str]) -> None:
    """Write the record atomically (a crash never leaves half a file)."""
    partial = record_path(folder) + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump({"version": VERSION, "frames": {str(frame): frames[frame] for frame in sorted(frames)}}, fh, indent=1)
    os_rules.replace_file(partial, record_path(folder))
