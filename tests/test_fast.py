"""Fast mode: a tiny transformation network trained for a few steps on tiny images, exported and applied."""

import json

import numpy as np
import pytest
import torch

from benchmarks.bench_fast import periodic_peak
from engine import Cancelled, EngineError, StyleOptions
from engine.cli import main
from engine.fast import inference, training
from engine.fast.net import TransformerNet, colour_transfer
from engine.fast.options import FastOptions
from engine.fast.training import SAMPLES
from engine.files import frames_in
from engine.images import read_image, resize, write_image
from engine.temporal import TemporalOptions

STEPS = 20
TINY = FastOptions(steps=STEPS, crop=32, batch_size=1, width="small", residual_blocks=1, learning_rate=1e-3)
OPTIONS = StyleOptions(seed=0)
# The tiny sizes' own band for the periodic-artifact measure (periods of 2.5 to 16 px).
LONGEST = 16


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory, content_small):
    folder = tmp_path_factory.mktemp("frames")
    for i in range(3):
        frame = np.roll(content_small, 4 * i, axis=1)
        if i == 1:  # one frame with alpha, which must pass through
            alpha = np.linspace(0, 1, frame.shape[1], dtype=np.float32)[None, :, None].repeat(frame.shape[0], 0)
            frame = np.concatenate([frame, alpha], axis=2)
        write_image(folder / f"frame_{i:04d}.png", frame)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, frames_dir, style_small):
    folder = tmp_path_factory.mktemp("model")
    seen = []
    frames = frames_in([frames_dir])
    path = training.train(frames, style_small, OPTIONS, TINY, folder, progress=seen.append)
    return path, seen


def test_training_reports_every_step_and_the_loss_falls(trained):
    _, seen = trained
    assert [p.iteration for p in seen] == list(range(1, STEPS + 1))
    assert all(p.total == STEPS and p.stage == "training" for p in seen)
    totals = [p.losses["total"] for p in seen]  # random crops make single steps noisy: compare means
    assert np.mean(totals[-5:]) < 0.85 * np.mean(totals[:3]), [round(t, 2) for t in totals]
    assert seen[-1].image().shape == (TINY.crop, TINY.crop, 3)


def test_model_files_are_saved_and_reused(trained, style_small, content_small):
    path, _ = trained
    info = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and path.with_suffix(".pt").is_file()
    size = max(content_small.shape[:2])  # trained for the frames' own size
    assert info["size"] == size and info["images"] == 5  # 3 frames + 2 samples
    assert info["key"] == training.model_key(style_small, OPTIONS, TINY, size)

    seen = []
    again = training.train([content_small], style_small, OPTIONS, TINY, path.parent, progress=seen.append)
    assert again == path and seen == []  # reused, not retrained: same style, settings and size


def test_model_key_follows_style_options_and_size_not_frames(style_small):
    key = training.model_key(style_small, OPTIONS, TINY, 64)
    assert training.model_key(style_small.copy(), OPTIONS, TINY, 64) == key
    assert training.model_key(style_small[::-1].copy(), OPTIONS, TINY, 64) != key
    assert training.model_key(style_small, OPTIONS.replace(style_weight=2 * OPTIONS.style_weight), TINY, 64) != key
    assert training.model_key(style_small, OPTIONS, TINY.replace(steps=STEPS + 1), 64) != key
    assert training.model_key(style_small, OPTIONS, TINY, 96) != key  # strokes are sized for the output
    assert training.model_key(style_small, OPTIONS.replace(device="cpu", iterations=9), TINY, 64) == key


def test_untrained_network_is_the_identity_and_never_upsamples_by_transposed_convolution():
    torch.manual_seed(0)
    net = TransformerNet("small", 1).eval()
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())  # checkerboards (Odena 2016)
    image = torch.rand(1, 3, 32, 48) * 0.9 + 0.05
    with torch.no_grad():
        torch.testing.assert_close(net(image), image, atol=1e-5, rtol=0)


def test_colour_transfer_gives_the_style_colour_statistics():
    rng = np.random.default_rng(0)
    content = rng.random((4000, 3)) @ np.array([[0.5, 0.1, 0], [0, 0.3, 0.1], [0.1, 0, 0.2]]) + 0.2
    style = rng.random((3000, 3)) @ np.array([[0.2, 0, 0], [0.1, 0.4, 0], [0, 0.1, 0.1]]) + 0.1
    matrix, offset = colour_transfer(content, style)
    moved = content @ matrix.T + offset
    np.testing.assert_allclose(moved.mean(axis=0), style.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(np.cov(moved.T), np.cov(style.T), atol=1e-9)


@pytest.fixture(scope="module")
def picture():
    """The bundled content sample scaled down (not up: an enlarged image has no fine detail at all)."""
    return resize(read_image(SAMPLES / "content.png"), 8 * LONGEST, 12 * LONGEST)


def test_periodic_peak_finds_stripes_not_texture_or_edges(picture):
    rng = np.random.default_rng(0)
    side = 8 * LONGEST
    noise = rng.random((side, side, 3))
    rows = np.arange(side)[:, None, None]
    stripes = 0.5 + 0.1 * np.sin(2 * np.pi * rows / 5.0) * np.ones((1, side, 3))  # horizontal, 5 px apart
    assert periodic_peak(noise, LONGEST) < 2
    assert periodic_peak(picture, LONGEST) < 4
    assert periodic_peak(stripes + 0.02 * noise, LONGEST) > 50
    striped = np.clip(picture + 0.1 * np.sin(2 * np.pi * np.arange(side)[:, None, None] / 4.0), 0, 1)
    assert periodic_peak(striped, LONGEST) > 3 * periodic_peak(picture, LONGEST)
    with pytest.raises(ValueError, match="at least"):
        periodic_peak(noise[:20], LONGEST)


def test_trained_model_adds_no_stripes(trained, picture):
    """The artifact measure of the benchmark on the tiny model's result, relative to the content's."""
    path, _ = trained
    result = inference.apply(path, picture, device="cpu")
    assert periodic_peak(result, LONGEST) < 1.5 * periodic_peak(picture, LONGEST)


@pytest.mark.parametrize("height, width", [(36, 52), (37, 53)])
def test_onnxruntime_output_matches_torch(trained, content_small, height, width):
    path, _ = trained
    saved = torch.load(path.with_suffix(".pt"), weights_only=True)
    net = TransformerNet(saved["width"], saved["residual_blocks"])
    net.load_state_dict(saved["state_dict"])
    image = resize(content_small, height, width)
    got = inference.apply(path, image, device="cpu")
    assert got.shape == image.shape and got.dtype == np.float32
    if height % 4 == 0 and width % 4 == 0:  # torch needs multiples of 4; apply() pads other sizes itself
        with torch.no_grad():
            want = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_apply_sequence_creates_the_folder_writes_every_frame_and_keeps_alpha(trained, frames_dir, tmp_path):
    path, _ = trained
    seen = []
    inputs = frames_in([frames_dir])
    out = tmp_path / "new" / "out"
    written = inference.apply_sequence(path, inputs, out, device="cpu", progress=seen.append)
    assert [p.name for p in written] == [p.name for p in inputs] and len(written) == 3
    assert [p.iteration for p in seen] == [1, 2, 3]
    with_alpha = read_image(written[1])
    assert with_alpha.shape[2] == 4
    np.testing.assert_allclose(with_alpha[..., 3], read_image(inputs[1])[..., 3], atol=1 / 255)


def test_temporal_blend_calms_a_still_shot(trained, content_small, tmp_path):
    """Frames of a still picture with faint render noise: blending in the previous result calms the frame-to-frame
    change."""
    path, _ = trained
    rng = np.random.default_rng(0)
    picture = resize(content_small, 64, 96)
    (tmp_path / "in").mkdir()
    inputs = [write_image(tmp_path / "in" / f"f{i}.png",
                          np.clip(picture + rng.normal(0, 0.005, picture.shape), 0, 1).astype(np.float32))
              for i in range(3)]

    def change(folder, temporal):
        out = [read_image(p) for p in inference.apply_sequence(path, inputs, tmp_path / folder, "cpu",
                                                                temporal=temporal)]
        return np.mean([np.abs(out[i] - out[i - 1]).mean() for i in (1, 2)])

    alone = change("alone", None)
    assert change("blended", TemporalOptions(blend=0.5)) < 0.8 * alone
    assert change("off", TemporalOptions(blend=0.5, enabled=False)) == pytest.approx(alone)


def test_cancel_stops_training_without_writing_a_model(tmp_path, style_small):
    seen = []
    with pytest.raises(Cancelled):
        training.train([], style_small, OPTIONS, TINY.replace(steps=50), tmp_path,
                       progress=seen.append, cancel=lambda: len(seen) >= 2)
    assert len(seen) == 2 and list(tmp_path.iterdir()) == []


def test_cancel_stops_a_sequence(trained, frames_dir, tmp_path):
    path, _ = trained
    with pytest.raises(Cancelled):
        inference.apply_sequence(path, frames_in([frames_dir]), tmp_path, cancel=lambda: any(tmp_path.iterdir()))
    assert len(list(tmp_path.iterdir())) == 1


def test_cli_apply_fast(trained, frames_dir, tmp_path, capsys):
    path, _ = trained
    out = tmp_path / "made" / "here"  # created, like stylize-sequence's output folder
    assert main(["apply-fast", str(frames_dir), "--fast-model", str(path), "-o", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in frames_dir.iterdir())
    single = tmp_path / "one" / "frame.png"
    assert main(["apply-fast", str(frames_dir / "frame_0000.png"), "--fast-model", str(path), "-o", str(single),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == [str(single)] and single.is_file()
    assert main(["apply-fast", str(frames_dir), "--fast-model", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["apply-fast", str(frames_dir), "--fast-model", str(path), "-o", str(tmp_path / "x.png")]) == 2
    assert "need an output folder" in capsys.readouterr().err


def test_bad_fast_options_are_one_clear_error():
    with pytest.raises(EngineError, match="multiple of 4"):
        FastOptions(crop=30)
    with pytest.raises(EngineError, match="unknown width"):
        FastOptions(width="huge")
    with pytest.raises(EngineError, match="unknown fast-mode option"):
        FastOptions.from_dict({"stepz": 3})


def test_cli_train_fast_creates_its_folder_trains_once_then_reuses(frames_dir, tmp_path, capsys):
    out = tmp_path / "models" / "new"
    args = ["train-fast", "engine/samples/style.png", "--frames", str(frames_dir), "-n", "2", "--crop", "32",
            "--batch-size", "1", "--width", "small", "--residual-blocks", "1", "--model", "vgg16", "--seed", "0",
            "-o", str(out), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    models = sorted(out.glob("fast-*.onnx"))
    assert len(models) == 1 and first["model"] == str(models[0]) and first["trained"] and first["steps"] == 2
    assert first["fast"]["residual_blocks"] == 1
    stamp = models[0].stat().st_mtime_ns
    assert main(args) == 0
    assert not json.loads(capsys.readouterr().out)["trained"]
    assert models[0].stat().st_mtime_ns == stamp  # reused, not rewritten


def test_cli_apply_fast_with_style_trains_next_to_the_output(frames_dir, tmp_path):
    out = tmp_path / "out"
    args = ["apply-fast", str(frames_dir), "--style", "engine/samples/style.png", "-o", str(out), "--iterations", "2",
            "--crop", "32", "--batch-size", "1", "--width", "small", "--residual-blocks", "1", "--weights", "random",
            "--blend", "0", "-q"]
    assert main(args) == 0
    assert len(list(out.glob("fast-*.onnx"))) == 1 and len(list(out.glob("frame_*.png"))) == 3
