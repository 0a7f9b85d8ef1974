"""Temporal coherence follows the picture (issue 11), on a rendered scene: a cube moving over sunlit ground,
uncovering ground behind it and dragging its shadow over ground that does not move.

Still pixels must stay still (static flicker at most half of independent frames'), and pixels whose content
really changed must change as much as when every frame is stylized anew (follow ratio at least 0.8): no ghosts,
no frozen shadows.  Small on purpose: 64x48 px, 3 frames, 15 iterations (benchmarks/bench_temporal.py runs
the full-size version and docs/temporal.md has its numbers).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_temporal import render_demo, run_benchmark
from engine import StyleOptions
from engine.images import read_image
from engine.temporal import TemporalOptions, read_frame
from engine.trust import colour_difference

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs Blender as a module (bpy)")
STYLE = Path(__file__).resolve().parents[1] / "engine" / "samples" / "style.png"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    return render_demo(tmp_path_factory.mktemp("demo"), width=64, height=48, frames=3, step=4)


@pytest.fixture(scope="module")
def measured(frames, tmp_path_factory) -> dict:
    """The measurements per mode (see benchmarks/bench_temporal.py)."""
    options = StyleOptions(iterations=15, seed=0)
    return run_benchmark(frames, read_image(STYLE), options, TemporalOptions(), tmp_path_factory.mktemp("bench")).results


def test_the_scene_has_a_shadow_moving_over_still_ground_and_depth(frames):
    first, last = read_frame(frames[0]), read_frame(frames[-1])
    still = (np.abs(last.to_prev).sum(axis=2) == 0) & (np.abs(first.to_next).sum(axis=2) == 0)
    changed = colour_difference(last.content, first.content) > 10
    assert (still & changed).sum() > 30, "the shadow changes ground that the vectors call still"
    assert last.depth is not None and last.depth.min() < 0.9 * np.median(last.depth), "the cube stands out in depth"


def test_still_pixels_flicker_at_most_half_as_much_as_independent_frames(measured):
    independent, temporal = measured["independent"], measured["temporal"]
    assert independent["static_flicker"] > 0.02, "independent frames must flicker for the comparison to mean anything"
    assert temporal["static_flicker_ratio"] <= 0.5, measured


def test_changed_pixels_follow_the_content_no_ghosts_no_frozen_shadows(measured):
    independent, temporal = measured["independent"], measured["temporal"]
    assert independent["follow"] > 0.05, "the output must change where the content does"
    assert temporal["follow_ratio"] >= 0.8, measured


def test_warping_error_halves_at_the_same_style_strength(measured):
    independent, temporal = measured["independent"], measured["temporal"]
    assert temporal["warping_error"] <= 0.5 * independent["warping_error"]
    assert temporal["style_distance"] < 1.1 * independent["style_distance"]


def test_fast_mode_blend_keeps_changed_pixels_and_calms_still_ones(measured):
    blend = next(entry for name, entry in measured.items() if name.startswith("independent + blend"))
    assert blend["follow_ratio"] >= 0.8, "blended pixels must not carry the previous frame's ghosts"
    assert blend["static_flicker_ratio"] <= 0.75
