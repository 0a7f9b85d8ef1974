"""Issue 12's engine pieces: the convergence stop and the fast-mode training-time estimate (timings are benchmarks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import EngineError
from engine.fast.estimate import FIXED_SECONDS, seconds_per_step, training_seconds
from engine.fast.options import FastOptions
from engine.optimize import STOP_CHECKS, STOP_EVERY, StopRule
from engine.options import StyleOptions
from engine.pipeline import stylize

TINY = StyleOptions(weights="random", seed=0, size=32, scales=1)


def test_the_stop_rule_looks_every_10_iterations_and_ends_after_two_still_looks():
    start = torch.zeros(1, 3, 4, 4)
    rule = StopRule(0.5, start)
    moving, still = start + 1 / 255, start + 1 / 255 + 0.4 / 255  # 1 level, then 0.4 levels more
    assert not any(rule.still(done, moving) for done in range(1, STOP_EVERY))  # looks only every 10 iterations
    assert not rule.still(STOP_EVERY, moving)  # moved 1 level since the start
    assert not rule.still(2 * STOP_EVERY, still)  # 0.4 < 0.5: one still look
    assert not rule.still(3 * STOP_EVERY, still + 0.6 / 255), "a moving look in between starts the count over"
    assert not rule.still(4 * STOP_EVERY, still + 0.6 / 255)
    assert rule.still(5 * STOP_EVERY, still + 0.6 / 255) and STOP_CHECKS == 2
    assert rule.changes == pytest.approx([1.0, 0.4, 0.6, 0.0, 0.0], abs=1e-4)
    off = StopRule(0.0, start)
    assert not any(off.still(done, start) for done in range(1, 100)), "0 switches the stop off"


def test_stop_change_is_validated():
    with pytest.raises(EngineError, match="stop_change"):
        StyleOptions(stop_change=-0.1)
    with pytest.raises(EngineError, match="stop_change"):
        StyleOptions(stop_change=300.0)
    assert StyleOptions().stop_change > 0, "the stop is on by default"


def _run(options: StyleOptions) -> list:
    rng = np.random.default_rng(0)
    content = rng.random((24, 32, 3)).astype(np.float32)
    style = rng.random((24, 32, 3)).astype(np.float32)
    reports = []
    stylize(content, [style], options, progress=reports.append)
    return reports


def test_a_still_picture_ends_the_scale_and_the_reports_count_what_it_saved():
    loose = _run(TINY.replace(iterations=30, stop_change=200.0))  # every look is "still": ends at the second
    assert len(loose) == 2 * STOP_EVERY
    assert [p.iteration for p in loose[:-1]] == list(range(1, 2 * STOP_EVERY))
    last = loose[-1]
    assert last.iteration == last.total == 30 and last.saved == 30 - 2 * STOP_EVERY and last.ran == 2 * STOP_EVERY
    assert "10 iterations" in last.saved_label and last.saved_seconds > 0
    full = _run(TINY.replace(iterations=2 * STOP_EVERY + 2, stop_change=0.0))
    assert len(full) == 2 * STOP_EVERY + 2 and full[-1].saved == 0 and full[-1].saved_label == ""


def test_training_seconds_scales_a_measured_step_by_steps_and_pixels():
    fast = FastOptions(steps=100, crop=128, batch_size=2)
    assert training_seconds(fast, 0.5) == pytest.approx(FIXED_SECONDS + 50)
    bigger = fast.replace(crop=256, steps=200)
    assert training_seconds(bigger, 0.5, measured=fast) == pytest.approx(FIXED_SECONDS + 200 * 0.5 * 4)


def test_a_training_step_is_measured_with_the_real_networks():
    options = StyleOptions(weights="random", seed=0)
    fast = FastOptions(crop=32, batch_size=1, width="small", residual_blocks=1)
    step = seconds_per_step(options, fast, repeats=1)
    assert math.isfinite(step) and 0 < step < 60
