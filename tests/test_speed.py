"""Issue 12's engine pieces: the convergence stop and the fast-mode training-time estimate (timings are benchmarks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import EngineError
from engine.fast.estimate import FIXED_SECONDS, seconds_per_step, training_seconds
from engine.fast.options import FastOptions
from engine.optimize import STOP_WINDOW, converged
from engine.options import StyleOptions
from engine.pipeline import stylize

TINY = StyleOptions(weights="random", seed=0, size=32, scales=1)


def test_converged_compares_the_best_loss_of_the_last_window_with_the_best_before():
    falling = [100.0 - i for i in range(30)]  # 10 over the last window: 10/71 = 14%
    assert not converged(falling, 0.1)
    assert converged(falling, 0.2)
    assert not converged(falling[:STOP_WINDOW], 0.99), "needs more than one window of history"
    assert not converged(falling, 0.0), "0 switches the stop off"
    noisy = [10.0 - 0.2 * i for i in range(20)] + [9.0]  # a bad last step does not stop a still-improving run
    assert noisy[-1] > noisy[-1 - STOP_WINDOW] and not converged(noisy, 0.001)
    assert converged([5.0] * 20, 0.001)


def test_stop_tolerance_is_validated():
    with pytest.raises(EngineError, match="stop_tolerance"):
        StyleOptions(stop_tolerance=-0.1)
    with pytest.raises(EngineError, match="stop_tolerance"):
        StyleOptions(stop_tolerance=1.0)


def _run(options: StyleOptions) -> list:
    rng = np.random.default_rng(0)
    content = rng.random((24, 32, 3)).astype(np.float32)
    style = rng.random((24, 32, 3)).astype(np.float32)
    reports = []
    stylize(content, [style], options, progress=reports.append)
    return reports


def test_a_converged_run_stops_early_and_its_last_report_says_so():
    loose = _run(TINY.replace(iterations=40, stop_tolerance=0.5))
    assert len(loose) < 40
    assert loose[-1].iteration == loose[-1].total == len(loose)
    assert [p.iteration for p in loose] == list(range(1, len(loose) + 1))
    assert len(_run(TINY.replace(iterations=40, stop_tolerance=0.0))) == 40


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
