"""Bad input never gives a wrong result: one class of issue 13 per section.

Each refusal is checked the way a user meets it: the real `neural-style` CLI
(a subprocess for one case per class, `engine.cli.main` in-process for the
variants) must exit with status 2, print exactly one line on stderr and no
traceback, and leave every file as it was.  Runs use random weights at a few
pixels: what is tested is the refusal, not the look.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from engine import hdr
from engine.cli import main
from engine.errors import EngineError
from engine.images import MAX_INPUT_PIXELS, MAX_INPUT_SIDE, check_size, read_image, write_image
from engine.networks import FeatureNet
from engine.options import StyleOptions
from engine.temporal import TemporalOptions

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--weights", "random", "--iterations", "2", "--size", "32", "--quiet"]


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture()
def pair(tmp_path):
    """A small content and style image and the output path a run would write."""
    rng = np.random.default_rng(0)
    content = write_image(tmp_path / "content.png", rng.random((24, 32, 3)).astype(np.float32))
    style = write_image(tmp_path / "style.png", rng.random((24, 24, 3)).astype(np.float32))
    return content, style, tmp_path / "out.png"


def snapshot(folder: Path) -> dict:
    """Every file and folder under `folder` with a digest of its bytes: any write shows."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NEURAL_STYLE_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_refused(code: int, stdout: str, stderr: str, pattern: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("neural-style: error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert stdout == ""


def refused_in_process(capfd, argv: list, pattern: str) -> None:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert_refused(code, out, err, pattern)


# --- non-finite numbers -----------------------------------------------------------------------


def test_cli_refuses_a_nan_learning_rate_with_one_line(pair, tmp_path):
    content, style, out = pair
    before = snapshot(tmp_path)
    result = run_cli("stylize", content, style, "-o", out, *QUICK, "--learning-rate", "nan", cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, "learning_rate must be a finite number")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--style-weight", "nan"], "style_weight must be a finite number"),
        (["--content-weight", "inf"], "content_weight must be a finite number"),
        (["--tv-weight=-inf"], "tv_weight must be a finite number"),
        (["--learning-rate", "inf"], "learning_rate must be a finite number"),
        (["--style-blend-weights", "nan"], "style_blend_weights must be a finite number"),
        (["--style-layers", "relu1_1,relu2_1", "--style-layer-weights", "1,nan"], "style_layer_weights must be a finite"),
        (["--style-scale", "nan"], "style_scale must be a finite number"),
        (["--style-blend-weights", "0"], "must not all be zero"),
        (["--seed=-5"], "seed must be between 0 and"),
    ],
)
def test_cli_refuses_every_non_finite_or_out_of_range_number(pair, tmp_path, capfd, flags, message):
    content, style, out = pair
    before = snapshot(tmp_path)
    refused_in_process(capfd, ["stylize", content, style, "-o", out, *QUICK, *flags], message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"style_weight": math.nan}, "style_weight must be a finite number"),
        ({"style_blend_weights": [1.0, math.inf]}, "style_blend_weights must be a finite number"),
        ({"iterations": "10"}, "iterations must be a whole number"),
        ({"iterations": 2.5}, "iterations must be a whole number"),
        ({"iterations": True}, "iterations must be a whole number"),
        ({"style_layers": "relu1_1"}, "style_layers must be a non-empty list"),
        ({"content_weight": "1"}, "content_weight must be a number"),
        ({"preserve_colors": 1}, "preserve_colors must be a true/false value"),
        ({"min_scale_size": 0}, "min_scale_size must be between"),
    ],
)
def test_options_from_json_check_every_field_once(fields, message):
    """The worker and the add-on send options as JSON; the same checks apply to them."""
    with pytest.raises(EngineError, match=message):
        StyleOptions.from_dict(fields)


def test_every_option_class_gets_the_finite_check():
    from engine.fast.options import FastOptions

    with pytest.raises(EngineError, match="weight must be a finite number"):
        TemporalOptions.from_dict({"weight": math.nan})
    with pytest.raises(EngineError, match="learning_rate must be a finite number"):
        FastOptions(learning_rate=math.inf)
    with pytest.raises(EngineError, match="must be a JSON object"):
        StyleOptions.from_dict(["style_weight", 1])
    # JSON numbers that are whole still fill float fields; lists become tuples.
    options = StyleOptions.from_dict({"style_weight": 5, "style_blend_weights": [1, 2]})
    assert options.style_weight == 5 and options.style_blend_weights == (1, 2)


def test_worker_answers_infinite_options_with_one_error_event(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "content.npy", rng.random((16, 16, 3)).astype(np.float32))
    np.save(tmp_path / "style.npy", rng.random((16, 16, 3)).astype(np.float32))
    job = {"cmd": "stylize", "id": "nan", "content": str(tmp_path / "content.npy"),
           "styles": [str(tmp_path / "style.npy")], "output": str(tmp_path / "out.npy"),
           "options": {"weights": "random", "iterations": 2, "style_weight": 7.0}}
    line = json.dumps(job).replace("7.0", "1e999")  # strict JSON, which Python reads as infinity
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NEURAL_STYLE_OFFLINE": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "engine.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True)
    worker.stdin.write(line + "\n")
    worker.stdin.flush()
    events = []
    while not events or events[-1]["event"] not in ("error", "done", "cancelled"):
        events.append(json.loads(worker.stdout.readline()))
    _, log = worker.communicate(json.dumps({"cmd": "quit"}) + "\n", timeout=120)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0].get("id") == "nan", events
    assert "style_weight must be a finite number" in errors[0]["message"] and "\n" not in errors[0]["message"]
    assert not any(e["event"] in ("done", "progress") for e in events)
    assert "Traceback" not in log and snapshot(tmp_path) == before


# --- weights files ----------------------------------------------------------------------------


def test_cli_refuses_a_weights_file_full_of_nan(pair, tmp_path):
    content, style, out = pair
    state = {k: torch.full_like(v, math.nan) for k, v in FeatureNet("nin").state_dict().items()
             if k.startswith("features.")}
    torch.save(state, tmp_path / "nan.pth")
    before = snapshot(tmp_path)
    result = run_cli("stylize", content, style, "-o", out, *QUICK, "--model", "nin", "--weights",
                     tmp_path / "nan.pth", cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, "damaged: features.0.weight holds NaN")
    assert snapshot(tmp_path) == before


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cli_refuses_a_malicious_pickle_without_running_it(pair, tmp_path):
    content, style, out = pair
    torch.save({"features.0.weight": RunsCode()}, tmp_path / "evil.pth")
    before = snapshot(tmp_path)
    result = run_cli("stylize", content, style, "-o", out, *QUICK, "--weights", tmp_path / "evil.pth", cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, r"holds Python objects \(posix.system\)")
    assert snapshot(tmp_path) == before and not (tmp_path / "pwned").exists()


# --- image limits -----------------------------------------------------------------------------


def png_bytes(width: int, height: int, rows: int, depth: int = 8) -> bytes:
    """An RGB PNG whose header says width x height but whose data holds only `rows` rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + bytes([90]) * (width * 3 * depth // 8)
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * rows))
            + chunk(b"IEND", b""))


def test_cli_refuses_a_60000_px_png_header_before_decoding(pair, tmp_path):
    _, style, out = pair
    (tmp_path / "huge.png").write_bytes(png_bytes(60000, 60000, 1))
    before = snapshot(tmp_path)
    result = run_cli("stylize", tmp_path / "huge.png", style, "-o", out, *QUICK, cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, "image too large: .*huge.png")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "name, data, message",
    [
        # 16-bit PNGs go to OpenCV, which once decoded them before any size check.
        ("deep.png", png_bytes(17000, 17000, 1, depth=16), "image too large"),
        ("wide.png", png_bytes(MAX_INPUT_SIDE + 1, 1, 1), f"image too large: .*is {MAX_INPUT_SIDE + 1}x1"),
        ("short.png", png_bytes(20, 20, 10), "truncated or corrupt"),
        ("short16.png", png_bytes(20, 20, 10, depth=16), "truncated or corrupt"),
        ("cut.png", png_bytes(20, 20, 20)[:-40], "cannot read image"),
        ("empty.png", b"", "empty"),
        ("text.png", b"not an image at all" * 10, "cannot read image"),
    ],
)
def test_cli_refuses_oversized_and_truncated_images(pair, tmp_path, capfd, name, data, message):
    content, style, out = pair
    (tmp_path / name).write_bytes(data)
    before = snapshot(tmp_path)
    refused_in_process(capfd, ["stylize", tmp_path / name, style, "-o", out, *QUICK], message)
    refused_in_process(capfd, ["stylize", content, tmp_path / name, "-o", out, *QUICK], message)  # as a style
    assert snapshot(tmp_path) == before


def test_size_limit_is_one_rule_for_every_format(tmp_path):
    check_size(MAX_INPUT_SIDE, MAX_INPUT_PIXELS // MAX_INPUT_SIDE, "ok")
    for width, height in ((MAX_INPUT_SIDE + 1, 1), (MAX_INPUT_SIDE, MAX_INPUT_PIXELS // MAX_INPUT_SIDE + 1)):
        with pytest.raises(EngineError, match="image too large"):
            check_size(width, height, "x")
    # An EXR's size comes from its header too (OpenEXR), before OpenCV decodes it.
    cv2.imwrite(str(tmp_path / "tall.exr"), np.zeros((MAX_INPUT_SIDE + 1, 1, 3), np.float32))
    with pytest.raises(EngineError, match=f"image too large: .*is 1x{MAX_INPUT_SIDE + 1}"):
        read_image(tmp_path / "tall.exr")


def test_a_complete_png_of_every_kind_still_reads(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.random((5, 7, 3)).astype(np.float32)
    (tmp_path / "full.png").write_bytes(png_bytes(7, 5, 5))
    np.testing.assert_allclose(read_image(tmp_path / "full.png"), 90 / 255, atol=1e-6)
    for bits in (8, 16):
        write_image(tmp_path / f"rgb{bits}.png", rgb, bits=bits)
        np.testing.assert_allclose(read_image(tmp_path / f"rgb{bits}.png"), rgb, atol=0.5 / (2**bits - 1) + 1e-6)
    grey = (rng.random((5, 7)) * 255).astype(np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png", transparency=0)
    Image.fromarray(np.dstack([grey, 255 - grey]), "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "palette.png").shape == (5, 7, 4)
    la = read_image(tmp_path / "la.png")
    np.testing.assert_allclose(la[..., 0], grey / 255, atol=1e-6)
    np.testing.assert_allclose(la[..., 3], (255 - grey) / 255, atol=1e-6)


def test_float_tiffs_read_with_their_values(tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.random((6, 9)).astype(np.float32)
    Image.fromarray(grey, mode="F").save(tmp_path / "grey.tif")  # Pillow mode F, one float32 channel
    np.testing.assert_allclose(read_image(tmp_path / "grey.tif"), np.dstack([grey] * 3), atol=1e-6)
    rgb = rng.random((6, 9, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "rgb.tif"), rgb[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 1])  # plain float32
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), rgb, atol=1e-6)
    cv2.imwrite(str(tmp_path / "logluv.tif"), rgb[..., ::-1])  # OpenCV's default for float: SGILOG, Pillow can't
    np.testing.assert_allclose(read_image(tmp_path / "logluv.tif"), rgb, atol=0.02)
    bright = rgb * 3
    cv2.imwrite(str(tmp_path / "bright.tif"), bright[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    assert read_image(tmp_path / "bright.tif").max() == 1.0
    np.testing.assert_allclose(read_image(tmp_path / "bright.tif", hdr=True), bright, rtol=1e-6)


# --- HDR ----------------------------------------------------------------------------------------


def test_tone_curve_is_invertible_and_leaves_display_images_alone():
    x = np.linspace(0, 40, 4001, dtype=np.float32)
    y = hdr.compress(x)
    assert y.max() < 1 and np.all(np.diff(y) > 0)  # monotonic into [0, 1)
    np.testing.assert_array_equal(y[x <= hdr.KNEE], x[x <= hdr.KNEE])
    np.testing.assert_allclose(hdr.expand(y, peak=40.0), x, rtol=1e-3, atol=1e-5)
    assert hdr.expand(np.float32([1.0]), peak=7.0)[0] == 7.0  # a saturated result stays finite, at the input's peak
    ldr = np.random.default_rng(4).random((4, 5, 4)).astype(np.float32)
    shown, restore = hdr.to_display(ldr)
    assert shown is ldr and restore(ldr) is ldr
    bright = ldr.copy()
    bright[..., :3] *= 5
    shown, restore = hdr.to_display(bright)
    assert shown.max() < 1 and np.array_equal(shown[..., 3], bright[..., 3])
    np.testing.assert_allclose(restore(shown), bright, rtol=1e-4, atol=1e-5)


def hdr_render(height: int = 24, width: int = 32) -> np.ndarray:
    """A scene-linear frame: mid-grey texture with a bright window at 6x and a lamp at 20x diffuse white."""
    rng = np.random.default_rng(5)
    linear = (0.05 + 0.4 * rng.random((height, width, 3))).astype(np.float32)
    linear[4:12, 6:18] = 6.0 * (0.8 + 0.2 * rng.random((8, 12, 3)))
    linear[16:20, 22:28] = 20.0
    return linear


def test_exr_round_trip_through_the_cli_keeps_values_above_one(pair, tmp_path):
    """With nothing to change (style and tv weight 0, content init) the run must give the render back:
    every value, highlights included, within 0.1 % (EXR holds float32)."""
    _, style, _ = pair
    linear = hdr_render()
    cv2.imwrite(str(tmp_path / "render.exr"), linear[..., ::-1])
    out = tmp_path / "out.exr"
    result = run_cli("stylize", tmp_path / "render.exr", style, "-o", out, "--weights", "random",
                     "--iterations", "2", "--style-weight", "0", "--tv-weight", "0", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.max() > 19
    np.testing.assert_allclose(back, linear, rtol=1e-3, atol=1e-4)


def test_stylized_hdr_keeps_its_highlights_above_one(style_small):
    from engine import stylize
    from engine.images import linear_to_srgb

    linear = hdr_render()
    content = linear_to_srgb(linear, hdr=True)
    out = stylize(content, [style_small], StyleOptions(weights="random", iterations=6, seed=0))
    lamp, window, rest = out[16:20, 22:28], out[5:11, 7:17], out[22:, :4]
    assert lamp.min() > 1.0 and window.mean() > 1.0  # clipping gave at most 1.0 here
    assert rest.max() <= 1.0  # display-range areas stay in range


# --- output paths -----------------------------------------------------------------------------


def test_cli_refuses_an_output_that_is_a_folder_before_any_work(pair, tmp_path):
    content, style, _ = pair
    (tmp_path / "result.png").mkdir()
    before = snapshot(tmp_path)
    # A missing weights file would fail the run later: the output must be refused first.
    result = run_cli("stylize", content, style, "-o", tmp_path / "result.png", *QUICK,
                     "--weights", tmp_path / "absent.pth", cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, "the output is a folder")
    assert snapshot(tmp_path) == before


def test_cli_refuses_a_missing_or_read_only_output_folder(pair, tmp_path, capfd):
    content, style, _ = pair
    before = snapshot(tmp_path)
    refused_in_process(capfd, ["stylize", content, style, "-o", tmp_path / "absent" / "out.png", *QUICK,
                               "--weights", tmp_path / "absent.pth"], "output folder does not exist")
    refused_in_process(capfd, ["stylize", content, style, "-o", tmp_path / "out.txt", *QUICK], "cannot write .txt")
    assert snapshot(tmp_path) == before
    locked = tmp_path / "locked"
    locked.mkdir()
    # Root writes through permission bits; the immutable attribute stops it too.
    lock, unlock = (["chattr", "+i"], ["chattr", "-i"]) if os.geteuid() == 0 else (["chmod", "500"], ["chmod", "700"])
    if subprocess.run([*lock, str(locked)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot make a read-only folder here ({lock[0]} failed)")
    try:
        refused_in_process(capfd, ["stylize", content, style, "-o", locked / "out.png", *QUICK],
                           "output folder is not writable")
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run([*unlock, str(locked)], check=True)


def test_sequence_output_problems_are_found_before_any_frame(pair, tmp_path, capfd):
    content, style, _ = pair
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        write_image(frames / f"frame_{i + 1}.png", read_image(content))
    (tmp_path / "taken.png").write_bytes(b"a file, not a folder")
    before = snapshot(tmp_path)
    refused_in_process(capfd, ["stylize-sequence", frames, style, "-o", tmp_path / "taken.png", *QUICK],
                       "the output folder is a file")
    refused_in_process(capfd, ["stylize-sequence", frames, style, "-o", tmp_path / "taken.png" / "sub", *QUICK],
                       "the output folder is a file")
    refused_in_process(capfd, ["stylize-sequence", frames, style, "-o", tmp_path / "out", *QUICK,
                               "--temporal-weight", "nan"], "temporal option weight must be a finite number")
    assert snapshot(tmp_path) == before
