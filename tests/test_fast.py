"""Fast mode: a tiny transformation network trained for a few steps on tiny images, exported and applied."""

import json

import numpy as np
import pytest
import torch

from engine import Cancelled, EngineError, StyleOptions
from engine.cli import main
from engine.fast import inference, training
from engine.fast.net import TransformerNet
from engine.fast.options import FastOptions
from engine.files import frames_in
from engine.images import read_image, resize, write_image

STEPS = 20
TINY = FastOptions(steps=STEPS, crop=32, batch_size=1, width="small", residual_blocks=1, learning_rate=1e-3)
OPTIONS = StyleOptions(seed=0)


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


def test_model_files_are_saved_and_reused(trained, style_small):
    path, _ = trained
    info = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and path.with_suffix(".pt").is_file()
    assert info["key"] == training.model_key(style_small, OPTIONS, TINY) and info["images"] == 5  # 3 frames + 2 samples

    seen = []
    again = training.train([], style_small, OPTIONS, TINY, path.parent, progress=seen.append)
    assert again == path and seen == []  # reused, not retrained


def test_model_key_follows_style_and_options_not_frames(style_small):
    key = training.model_key(style_small, OPTIONS, TINY)
    assert training.model_key(style_small.copy(), OPTIONS, TINY) == key
    assert training.model_key(style_small[::-1].copy(), OPTIONS, TINY) != key
    assert training.model_key(style_small, OPTIONS.replace(style_weight=2 * OPTIONS.style_weight), TINY) != key
    assert training.model_key(style_small, OPTIONS, TINY.replace(steps=STEPS + 1)) != key
    assert training.model_key(style_small, OPTIONS.replace(device="cpu", size=99), TINY) == key


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


def test_apply_sequence_writes_every_frame_and_keeps_alpha(trained, frames_dir, tmp_path):
    path, _ = trained
    seen = []
    inputs = frames_in([frames_dir])
    written = inference.apply_sequence(path, inputs, tmp_path, device="cpu", progress=seen.append)
    assert [p.name for p in written] == [p.name for p in inputs] and len(written) == 3
    assert [p.iteration for p in seen] == [1, 2, 3]
    with_alpha = read_image(written[1])
    assert with_alpha.shape[2] == 4
    np.testing.assert_allclose(with_alpha[..., 3], read_image(inputs[1])[..., 3], atol=1 / 255)


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
    assert main(["apply-fast", str(frames_dir), "--model", str(path), "-o", str(tmp_path), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in frames_dir.iterdir())
    assert main(["apply-fast", str(frames_dir), "--model", str(tmp_path / "missing.onnx"), "-o", str(tmp_path)]) == 2
    assert "model not found" in capsys.readouterr().err


def test_bad_fast_options_are_one_clear_error():
    with pytest.raises(EngineError, match="multiple of 4"):
        FastOptions(crop=30)
    with pytest.raises(EngineError, match="unknown width"):
        FastOptions(width="huge")
    with pytest.raises(EngineError, match="unknown fast-mode option"):
        FastOptions.from_dict({"stepz": 3})


def test_cli_train_fast_trains_once_then_reuses(frames_dir, tmp_path, capsys):
    args = ["train-fast", "engine/samples/style.png", "--frames", str(frames_dir), "--steps", "2", "--crop", "32",
            "--batch-size", "1", "--width", "small", "--seed", "0", "-o", str(tmp_path), "-q"]
    assert main(args) == 0
    first = capsys.readouterr().out
    models = sorted(tmp_path.glob("fast-*.onnx"))
    assert len(models) == 1 and str(models[0]) in first
    stamp = models[0].stat().st_mtime_ns
    assert main(args) == 0
    assert models[0].stat().st_mtime_ns == stamp  # reused, not rewritten


def test_cli_apply_fast_with_style_trains_next_to_the_output(frames_dir, tmp_path):
    args = ["apply-fast", str(frames_dir), "--style", "engine/samples/style.png", "-o", str(tmp_path), "--steps", "2",
            "--crop", "32", "--batch-size", "1", "--width", "small", "--loss-network", "vgg16", "-q"]
    assert main(args) == 0
    assert len(list(tmp_path.glob("fast-*.onnx"))) == 1 and len(list(tmp_path.glob("frame_*.png"))) == 3
