"""Temporal coherence: warping, occlusion, Blender's motion vectors and depth, OpenCV flow, the sequence loop.

The Blender tests render benchmarks/demo_scene.py's demo animation (a
textured cube moving 6 px right and 3 px up per frame over sunlit ground)
with Cycles in a child process, once per session.  What temporal coherence
makes of it (static flicker, follow ratio) is tested in test_temporal_follow.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engine import Cancelled, EngineError, StyleOptions
from benchmarks.bench_temporal import render_demo, warping_error
from engine.cli import main
from engine.exr import read_render
from engine.flow import Motion, estimate_flow, warp
from engine.files import list_frames
from engine.images import write_image
from engine.temporal import (
    Frame, TemporalOptions, blend_previous, frame_motion, linked_motion, read_frame, stylize_sequence,
)
from engine.trust import trust_mask

STEP = (6, -3)  # the demo cube's motion per frame in image pixels (x right, y down)
needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs Blender as a module (bpy)")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> list[Path]:
    """Three 96x64 multilayer EXR frames of the demo animation."""
    return render_demo(tmp_path_factory.mktemp("demo"), width=96, height=64, frames=3, step=STEP[0])


def texture(height=48, width=64, seed=0) -> np.ndarray:
    """Smooth random colour texture: every pixel distinguishable, flow well defined."""
    import cv2

    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    return np.clip((cv2.GaussianBlur(noise, (0, 0), 2.0) - 0.5) * 4 + 0.5, 0, 1)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The image moved by (dx, dy) pixels (x right, y down), wrapping around."""
    return np.roll(image, (dy, dx), axis=(0, 1))


def test_warp_with_backward_flow_lines_previous_frame_up_with_current():
    previous = texture()
    current = shifted(previous, 3, -2)
    flow = np.zeros(previous.shape[:2] + (2,), np.float32)
    flow[...] = (-3, 2)  # each current pixel was 3 px left and 2 px lower in the previous frame
    inner = (slice(4, -4), slice(5, -5))
    assert np.abs(warp(previous, flow)[inner] - current[inner]).max() < 1e-5
    assert np.abs(warp(previous, -flow)[inner] - current[inner]).mean() > 0.1


def test_warp_interpolates_subpixel_flow():
    previous = texture()
    flow = np.full(previous.shape[:2] + (2,), (0.5, 0.0), np.float32)
    expected = (previous[:, :-1] + previous[:, 1:]) / 2
    assert np.allclose(warp(previous, flow)[:, :-1], expected, atol=1e-5)


def square_motion(size=32, side=8, left=8, top=12, dx=4):
    """Flows of a square moving `dx` px right over a static background, as the engine's backward/forward pair."""
    to_prev = np.zeros((size, size, 2), np.float32)
    to_prev[top:top + side, left + dx:left + dx + side] = (-dx, 0)  # the square now, from where it was
    prev_to_next = np.zeros((size, size, 2), np.float32)
    prev_to_next[top:top + side, left:left + side] = (dx, 0)  # the square before, to where it goes
    return to_prev, prev_to_next


def test_occlusion_mask_marks_disoccluded_background_and_keeps_tracked_pixels():
    to_prev, prev_to_next = square_motion()
    mask = trust_mask(to_prev, prev_to_next, feather=0)
    rows = slice(13, 19)
    assert (mask[rows, 8:12] == 0).all(), "background the square uncovered must be untrusted"
    assert (mask[rows, 14:18] == 1).all(), "the inside of the moving square is tracked"
    assert (mask[:8] == 1).all() and (mask[24:] == 1).all(), "static background stays trusted"
    assert mask.mean() > 0.8


def test_occlusion_mask_distrusts_pixels_coming_from_outside_the_frame():
    flow = np.full((16, 16, 2), (-3, 0), np.float32)  # everything moved 3 px right
    mask = trust_mask(flow, -flow, feather=0)
    assert (mask[:, :3] == 0).all() and (mask[:, 4:] == 1).all()


def test_occlusion_mask_rejects_mismatched_flows():
    with pytest.raises(EngineError, match="HxWx2"):
        trust_mask(np.zeros((8, 8, 2), np.float32), np.zeros((8, 9, 2), np.float32))


@needs_bpy
def test_blender_vectors_point_to_previous_and_next_positions(rendered):
    """The sign convention, measured: X,Y = previous - now and Z,W = now - next, in y-up pixels."""
    middle = read_render(rendered[1])
    first = read_render(rendered[0])
    cube = np.linalg.norm(middle.to_prev, axis=2) > 0
    assert 400 < cube.sum() < 1200  # the cube (about 22 px a side at 96 px) moves; the ground does not
    assert np.allclose(np.median(middle.to_prev[cube], axis=0), (-STEP[0], -STEP[1]), atol=0.01)
    assert np.allclose(np.median(middle.to_next[cube], axis=0), STEP, atol=0.01)
    assert np.abs(first.to_prev).max() == 0, "the first frame has no motion from a previous one"
    # The Depth pass: the cube's top is nearer the camera than the ground.
    assert middle.depth is not None and middle.depth.shape == cube.shape
    assert np.median(middle.depth[cube]) < 0.9 * np.median(middle.depth[~cube])
    # Warping the previous frame's colour along to_prev reproduces this frame wherever the mask trusts it.
    motion = frame_motion(read_frame(rendered[0]), read_frame(rendered[1]))
    trusted = motion.mask > 0
    assert 0.75 < trusted.mean() < 0.99
    error = np.abs(warp(first.image[..., :3], motion.to_prev) - middle.image[..., :3])[trusted].mean()
    wrong_way = np.abs(warp(first.image[..., :3], -motion.to_prev) - middle.image[..., :3])[trusted].mean()
    assert error < 0.02 and wrong_way > 5 * error


@needs_bpy
def test_worker_motion_from_exr_paths_matches_the_vectors(rendered):
    middle = read_render(rendered[1])
    motion = linked_motion(TemporalOptions(), middle.image, rendered[1], previous_vectors=rendered[0])
    expected = frame_motion(read_frame(rendered[0]), read_frame(rendered[1]))
    assert np.array_equal(motion.to_prev, expected.to_prev) and np.array_equal(motion.mask, expected.mask)
    assert linked_motion(TemporalOptions(enabled=False), middle.image, rendered[1], previous_vectors=rendered[0]) is None
    # Whatever conversion the caller's pixels went through, the photometric check compares the two EXRs.
    darker = middle.image * np.float32(0.6)
    assert np.array_equal(linked_motion(TemporalOptions(), darker, rendered[1], previous_vectors=rendered[0]).mask,
                          expected.mask)


def test_opencv_flow_recovers_a_known_shift():
    previous = texture(64, 64)
    current = shifted(previous, 4, 2)
    flow = estimate_flow(current, previous)
    assert np.allclose(np.median(flow[8:-8, 8:-8].reshape(-1, 2), axis=0), (-4, -2), atol=0.25)


def write_sequence(folder: Path, count=3, step=(3, 1)) -> list[Path]:
    """A texture panning by `step` px per frame, as PNG files without any motion vectors."""
    folder.mkdir()
    base = texture(40, 40, seed=3)
    return [write_image(folder / f"shot_{i + 1}.png", shifted(base, i * step[0], i * step[1])) for i in range(count)]


def test_sequence_without_vectors_uses_opencv_flow(tmp_path):
    paths = write_sequence(tmp_path / "frames")
    frames = [read_frame(p) for p in paths]
    assert frames[1].to_prev is None
    motion = frame_motion(frames[0], frames[1], TemporalOptions(flow="auto"))
    inner = motion.to_prev[8:-8, 8:-8].reshape(-1, 2)
    assert np.allclose(np.median(inner, axis=0), (-3, -1), atol=0.3)
    with pytest.raises(EngineError, match="Vector pass"):
        frame_motion(frames[0], frames[1], TemporalOptions(flow="vectors"))
    worker = linked_motion(TemporalOptions(), frames[1].content, previous_content=frames[0].content)
    assert np.array_equal(worker.to_prev, motion.to_prev)
    assert linked_motion(TemporalOptions(), frames[1].content) is None


def test_stylize_sequence_reports_frames_and_keeps_finished_frames_on_cancel(tmp_path):
    paths = write_sequence(tmp_path / "frames")
    style = texture(32, 32, seed=9)
    options = StyleOptions(weights="random", iterations=2, seed=0)  # plumbing only
    stages = []

    def progress(p):
        stages.append((p.stage, p.iteration, p.total))

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        stylize_sequence(paths, [style], options, TemporalOptions(), out, progress=progress,
                         cancel=lambda: len(stages) >= 3)
    assert [p.name for p in sorted(out.iterdir())] == ["shot_1.png"]
    assert stages[0] == ("frame 1 of 3, 40x40", 1, 6) and stages[2][0].startswith("frame 2 of 3")


def test_cli_stylize_sequence_writes_every_frame(tmp_path, capsys):
    write_sequence(tmp_path / "frames")
    style = write_image(tmp_path / "style.png", texture(32, 32, seed=9))
    code = main(["stylize-sequence", str(tmp_path / "frames"), str(style), "-o", str(tmp_path / "out"),
                 "--weights", "random", "--iterations", "2", "--flow", "opencv", "--blend", "0.3", "-q"])
    assert code == 0
    assert [p.name for p in list_frames(tmp_path / "out")] == ["shot_1.png", "shot_2.png", "shot_3.png"]


def test_cli_rejects_bad_temporal_options_in_one_line(tmp_path, capsys):
    write_sequence(tmp_path / "frames")
    style = write_image(tmp_path / "style.png", texture(32, 32, seed=9))
    code = main(["stylize-sequence", str(tmp_path / "frames"), str(style), "-o", str(tmp_path / "out"), "--blend", "2"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "neural-style: error: temporal blend must be between 0 and 1, got 2.0"
    assert not (tmp_path / "out").exists()


def test_blend_previous_only_touches_trusted_pixels():
    current, previous = np.zeros((8, 8, 4), np.float32), np.ones((8, 8, 3), np.float32)
    mask = np.zeros((8, 8), np.float32)
    mask[:, 4:] = 1
    out = blend_previous(current, previous, Motion(np.zeros((8, 8, 2), np.float32), mask), 0.25)
    assert np.allclose(out[:, :4, :3], 0) and np.allclose(out[:, 4:, :3], 0.25) and np.allclose(out[..., 3], 0)


def test_warping_error_is_zero_for_perfectly_tracked_frames_and_grows_with_change():
    previous = texture()
    current = shifted(previous, 2, 0)
    to_prev = np.full(previous.shape[:2] + (2,), (-2, 0), np.float32)  # the wrapped-in columns come from outside
    frames = [Frame(previous, to_next=-to_prev), Frame(current, to_prev=to_prev)]
    assert warping_error([previous, current], frames) < 1e-10
    assert warping_error([previous, np.clip(current + 0.1, 0, 1)], frames) > 0.01


def test_temporal_options_round_trip_and_validate():
    options = TemporalOptions(weight=10.0, flow="opencv", blend=0.5)
    assert TemporalOptions.from_dict(options.to_dict()) == options
    with pytest.raises(EngineError, match="unknown flow"):
        TemporalOptions(flow="magic")
    with pytest.raises(EngineError, match="unknown temporal option"):
        TemporalOptions.from_dict({"strength": 1})
    with pytest.raises(EngineError, match="tolerance must not be negative"):
        TemporalOptions(tolerance=-1.0)
    with pytest.raises(EngineError, match="feather must not be negative"):
        TemporalOptions(feather=-1.0)


def test_vectors_from_a_plain_exr_are_refused_in_one_line(tmp_path):
    plain = write_image(tmp_path / "plain.exr", texture())
    with pytest.raises(EngineError, match="no Combined pass"):
        read_render(plain)
    assert read_frame(plain).to_prev is None  # a plain EXR is still a usable frame, just without vectors
