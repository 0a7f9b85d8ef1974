"""The trust mask on synthetic frames: a square moving over a background, a shadow that moves where nothing
moves, a depth disocclusion, and the soft edge."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.errors import EngineError
from engine.trust import colour_difference, consistency, depth_visible, photometric, soften, trust_mask

SIZE, SIDE, TOP, LEFT, DX = 48, 16, 16, 8, 5
ROWS = slice(TOP + 4, TOP + SIDE - 4)  # rows well inside the square, away from its top and bottom edges


def texture(height=SIZE, width=SIZE, seed=0, low=0.2, high=0.8) -> np.ndarray:
    """Smooth random colour texture between `low` and `high`."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return low + (high - low) * smooth


def moving_square():
    """Two frames of a textured square moving DX px right over a static background, with the exact flows."""
    background, patch = texture(seed=1), texture(SIDE, SIDE, seed=2, low=0.0, high=0.3)
    previous, current = background.copy(), background.copy()
    previous[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = patch
    current[TOP:TOP + SIDE, LEFT + DX:LEFT + DX + SIDE] = patch
    to_prev = np.zeros((SIZE, SIZE, 2), np.float32)
    to_prev[TOP:TOP + SIDE, LEFT + DX:LEFT + DX + SIDE] = (-DX, 0)  # the square now, from where it was
    prev_to_next = np.zeros((SIZE, SIZE, 2), np.float32)
    prev_to_next[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = (DX, 0)  # the square before, to where it goes
    return previous, current, to_prev, prev_to_next


def test_moving_square_keeps_tracked_pixels_and_distrusts_the_revealed_background():
    previous, current, to_prev, prev_to_next = moving_square()
    mask = trust_mask(to_prev, prev_to_next, content=current, previous_content=previous)
    revealed = mask[ROWS, LEFT:LEFT + DX]
    assert (revealed == 0).all(), "background the square uncovered must be re-stylized"
    assert (mask[ROWS, LEFT + DX + 5:LEFT + SIDE + DX - 5] > 0.9).all(), "the inside of the moving square is tracked"
    assert (mask[:TOP - 8] == 1).all() and (mask[TOP + SIDE + 8:] == 1).all(), "static background stays trusted"
    assert 0.75 < mask.mean() < 0.97


def test_photometric_check_catches_a_ghost_the_flow_missed():
    """Without any motion (vectors lost the object, or flow failed), the changed colour alone distrusts both places."""
    previous, current, _, _ = moving_square()
    still = np.zeros((SIZE, SIZE, 2), np.float32)
    blind = trust_mask(still, still)
    assert (blind == 1).all(), "consistency alone trusts everything when the flow says nothing moved"
    mask = trust_mask(still, still, content=current, previous_content=previous)
    assert (mask[ROWS, LEFT:LEFT + DX] == 0).all(), "where the square was (its ghost)"
    assert (mask[ROWS, LEFT + SIDE:LEFT + SIDE + DX] == 0).all(), "where the square arrived"
    assert (mask[:TOP - 8] == 1).all()


def test_a_shadow_moving_over_still_ground_is_untrusted_where_it_leaves_and_where_it_arrives():
    ground = texture(seed=4, low=0.4, high=0.9)
    previous, current = ground.copy(), ground.copy()
    previous[10:30, 5:20] *= 0.55  # the shadow before ...
    current[10:30, 12:27] *= 0.55  # ... and after: the ground does not move, its shading does
    still = np.zeros((SIZE, SIZE, 2), np.float32)
    mask = trust_mask(still, still, content=current, previous_content=previous)
    assert (mask[12:28, 5:12] == 0).all(), "the shadow left: re-stylize lit ground"
    assert (mask[12:28, 20:27] == 0).all(), "the shadow arrived: re-stylize shaded ground"
    assert (mask[12:28, 15:17] > 0.9).all(), "shaded in both frames: keep"
    assert (mask[:3] == 1).all() and (mask[37:] == 1).all(), "unchanged ground: keep"


def test_small_colour_noise_stays_trusted_and_alpha_changes_count():
    image = texture(seed=5)
    noisy = np.clip(image + np.random.default_rng(6).normal(0, 0.005, image.shape).astype(np.float32), 0, 1)
    still = np.zeros((SIZE, SIZE, 2), np.float32)
    assert (photometric(image, noisy, still) == 1).all()
    opaque = np.concatenate([image, np.ones((SIZE, SIZE, 1), np.float32)], axis=2)
    faded = opaque.copy()
    faded[:, :20, 3] = 0.0  # same colour, now transparent
    weight = photometric(opaque, faded, still)
    assert (weight[:, :20] == 0).all() and (weight[:, 20:] == 1).all()


def test_colour_difference_is_perceptual_delta_e():
    black, grey = np.zeros((1, 1, 3), np.float32), np.full((1, 1, 3), 0.5, np.float32)
    assert colour_difference(black, grey)[0, 0] == pytest.approx(53.4, abs=0.5)  # L* of sRGB 0.5
    assert colour_difference(grey, grey)[0, 0] == 0


def test_depth_finds_a_disocclusion_that_colour_and_flow_cannot():
    """A near object moved away; the background it uncovered happens to have the object's colour and no
    forward flow is known: only depth says that this background was hidden in the previous frame."""
    background_depth, object_depth = 10.0, 4.0
    previous_depth = np.full((SIZE, SIZE), background_depth, np.float32)
    depth = previous_depth.copy()
    previous_depth[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = object_depth
    depth[TOP:TOP + SIDE, LEFT + DX:LEFT + DX + SIDE] = object_depth
    to_prev = np.zeros((SIZE, SIZE, 2), np.float32)
    to_prev[TOP:TOP + SIDE, LEFT + DX:LEFT + DX + SIDE] = (-DX, 0)
    flat = np.full((SIZE, SIZE, 3), 0.5, np.float32)  # the same colour everywhere, so photometry sees nothing

    visible = depth_visible(previous_depth, depth, to_prev)
    assert (visible[TOP:TOP + SIDE, LEFT:LEFT + DX] == 0).all()
    assert visible.sum() == SIZE * SIZE - SIDE * DX, "only the uncovered background is flagged"

    without = trust_mask(to_prev, content=flat, previous_content=flat)
    with_depth = trust_mask(to_prev, content=flat, previous_content=flat, depth=depth, previous_depth=previous_depth)
    assert (without[ROWS, LEFT:LEFT + DX] == 1).all()
    assert (with_depth[ROWS, LEFT:LEFT + DX] == 0).all()


def test_depth_tolerates_motion_towards_the_camera_and_blenders_infinite_background():
    depth = np.full((8, 8), 5.0, np.float32)
    depth[:, :2] = 1e10  # empty background
    previous = depth * 1.03  # everything came 3% nearer
    previous[:, :2] = np.inf
    assert (depth_visible(previous, depth, np.zeros((8, 8, 2), np.float32)) == 1).all()


def test_soft_edge_ramps_up_away_from_untrusted_pixels_and_never_raises_trust():
    hard = np.ones((20, 40), np.float32)
    hard[:, :10] = 0
    hard[5, 30] = 0  # a single untrusted pixel stays untrusted
    soft = soften(hard, 2.0)
    row = soft[15]
    assert (row[:10] == 0).all() and row[-1] == pytest.approx(1, abs=1e-3)
    assert (np.diff(row[10:20]) >= 0).all() and 0.05 < row[11] < 0.9, "a ramp, not a step"
    assert soft[5, 30] == 0 and soft[5, 31] < 0.5
    assert (soft <= hard).all()
    assert np.array_equal(soften(hard, 0), hard)


def test_flow_from_outside_the_frame_is_untrusted():
    flow = np.full((16, 16, 2), (-3, 0), np.float32)  # everything moved 3 px right
    mask = trust_mask(flow, -flow, feather=0)
    assert (mask[:, :3] == 0).all() and (mask[:, 4:] == 1).all()


def test_consistency_marks_motion_boundaries_and_rejects_bad_shapes():
    _, _, to_prev, prev_to_next = moving_square()
    mask = consistency(to_prev, prev_to_next)
    assert (mask[ROWS, LEFT:LEFT + DX] == 0).all() and mask[0, 0] == 1
    with pytest.raises(EngineError, match="HxWx2"):
        consistency(np.zeros((8, 8, 2), np.float32), np.zeros((8, 9, 2), np.float32))
    with pytest.raises(EngineError, match="HxWx2"):
        trust_mask(np.zeros((8, 8), np.float32))
    with pytest.raises(EngineError, match="depth must be HxW"):
        depth_visible(np.zeros((8, 8), np.float32), np.zeros((8, 9), np.float32), np.zeros((8, 8, 2), np.float32))
    with pytest.raises(EngineError, match="one size"):
        photometric(np.zeros((8, 8, 3), np.float32), np.zeros((8, 9, 3), np.float32), np.zeros((8, 8, 2), np.float32))
