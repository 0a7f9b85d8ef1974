"""Issue 12's engine pieces: the convergence stop and the fast-mode training-time estimate (timings are benchmarks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import EngineError
from engine.fast.estimate import FIXED_SECONDS, seconds_per_step, training_seconds
from engine.fast.options import FastOptions
from engine.optimize import RESTART_JUMP, STOP_CHECKS, STOP_EVERY, Best, StopRule
from engine.options import StyleOptions
from engine.pipeline import stylize

TINY = StyleOptions(weights="random", seed=0, size=32, scales=1)


def test_the_stop_rule_watches_the_style_statistics_every_10_iterations_and_needs_two_settled_looks():
    torch.manual_seed(0)
    features = torch.rand(1, 8, 6, 6)
    rule = StopRule(1.0)
    assert [done for done in range(1, 42) if rule.looks_at(done)] == [1, 11, 21, 31, 41]  # the start, then every 10
    rule.look({"relu1_1": features})
    assert rule.changes == [] and not rule.settled  # nothing to compare the starting picture with
    shifted = features.roll(3, dims=-1)  # the same strokes in other places: the look has not changed
    rule.look({"relu1_1": shifted})
    assert rule.changes[-1] < 1e-4 and not rule.settled  # one settled look is not enough
    rule.look({"relu1_1": shifted * 1.1})  # 10% brighter features: Grams 21% larger
    assert rule.changes[-1] == pytest.approx(21.0, rel=1e-3) and not rule.settled, "a moving look starts the count over"
    rule.look({"relu1_1": shifted * 1.1})
    rule.look({"relu1_1": shifted * 1.1 * 1.004})  # 0.8% < 1%
    assert rule.settled and STOP_CHECKS == 2 and STOP_EVERY == 10
    off = StopRule(0.0)
    assert not any(off.looks_at(done) for done in range(1, 100)), "0 switches the stop off"


def test_a_jump_of_the_loss_sends_the_image_back_to_the_best_one():
    image = torch.zeros(1, 3, 2, 2)
    best = Best(image)
    best.see(2.0, image + 0.2)
    best.see(1.0, image + 0.1)  # the best so far
    best.see(1.05, image + 0.3)
    assert not best.jumped(1.0 * (1 + RESTART_JUMP)) and best.jumped(1.0 * (1 + RESTART_JUMP) + 1e-6)
    best.restore(image)
    assert torch.allclose(image, torch.full_like(image, 0.1)) and best.loss == 1.0


def test_stop_change_is_validated():
    with pytest.raises(EngineError, match="stop_change"):
        StyleOptions(stop_change=-0.1)
    with pytest.raises(EngineError, match="stop_change"):
        StyleOptions(stop_change=101.0)
    assert StyleOptions().stop_change > 0, "the stop is on by default"


def _run(options: StyleOptions) -> list:
    rng = np.random.default_rng(0)
    content = rng.random((24, 32, 3)).astype(np.float32)
    style = rng.random((24, 32, 3)).astype(np.float32)
    reports = []
    stylize(content, [style], options, progress=reports.append)
    return reports


def test_a_still_picture_ends_the_scale_and_the_reports_count_what_it_saved():
    ends = 2 * STOP_EVERY + 1  # looks at the start, after 10 and after 20 iterations
    loose = _run(TINY.replace(iterations=30, stop_change=100.0))  # every look "settled": ends at the third
    assert len(loose) == ends
    assert [p.iteration for p in loose[:-1]] == list(range(1, ends))
    last = loose[-1]
    assert last.iteration == last.total == 30 and last.saved == 30 - ends and last.ran == ends
    assert "9 iterations" in last.saved_label and last.saved_seconds > 0
    full = _run(TINY.replace(iterations=ends + 1, stop_change=0.0))
    assert len(full) == ends + 1 and full[-1].saved == 0 and full[-1].saved_label == ""


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
