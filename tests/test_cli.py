"""`neural-style stylize` end to end, and every kind of bad input the issue lists."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.images import read_image, write_image
from engine.options import StyleOptions

QUICK = ["--size", "48", "-n", "2", "--quiet"]


@pytest.fixture()
def files(tmp_path, content_small, style_small):
    content = write_image(tmp_path / "content.png", content_small)
    style = write_image(tmp_path / "style.jpg", style_small)
    return tmp_path, content, style


def test_default_job_uses_bundled_samples(tmp_path, capsys):
    out = tmp_path / "result.png"
    assert main(["stylize", "-o", str(out), "--size", "64", "-n", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["content"].endswith("content.png") and summary["styles"][0].endswith("style.png")
    assert "packaged" in summary["weights"]
    result = read_image(out)
    assert result.shape == (43, 64, 3)


# The README's demo writes where git and the extension build never look
def test_the_demo_writes_into_the_ignored_out_folder_at_its_own_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["stylize", "--weights", "random", "--size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "out" / "stylized.png").is_file() and not (tmp_path / "stylized.png").exists()
    assert summary["output"] == os.path.join("out", "stylized.png")
    # the default length, which the convergence stop may cut short
    assert summary["options"]["iterations"] == StyleOptions().iterations
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert "/out/" in open(os.path.join(root, ".gitignore")).read().split()


def test_stylize_writes_output_and_leaves_inputs(files):
    tmp, content, style = files
    before = content.read_bytes(), style.read_bytes()
    out = tmp / "out.png"
    assert main(["stylize", str(content), str(style), "-o", str(out), *QUICK]) == 0
    assert read_image(out).shape == (32, 48, 3)
    assert (content.read_bytes(), style.read_bytes()) == before
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")]  # no temp files left behind


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "RGBA", "LA"])
def test_unusual_image_modes_are_read(tmp_path, mode):
    data = (np.arange(24 * 32).reshape(24, 32) % 255).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(data.astype(np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = Image.fromarray(data, mode="L").convert(mode)
    img.save(tmp_path / "img.png")
    arr = read_image(tmp_path / "img.png")
    assert arr.dtype == np.float32 and arr.shape[:2] == (24, 32)
    assert arr.shape[2] == (4 if mode in ("RGBA", "LA") else 3)
    assert 0.9 < arr[..., :3].max() <= 1.0


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_png_round_trip_keeps_precision(tmp_path, channels):
    img = np.zeros((8, 8, channels), np.float32)
    img[..., 0] = 1000 / 65535  # not representable in 8 bits
    img[..., -1] = 0.5
    write_image(tmp_path / "deep.png", img, bits=16)
    back = read_image(tmp_path / "deep.png")
    assert back.shape == img.shape
    np.testing.assert_allclose(back, img, atol=1 / 65535)  # one 16-bit step; 8 bits would be 1/255


def test_exr_round_trip_is_linear_on_disk(tmp_path):
    img = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    write_image(tmp_path / "a.exr", img)
    np.testing.assert_allclose(read_image(tmp_path / "a.exr"), img, atol=2e-3)


def error_of(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("neural-style: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


def test_missing_empty_and_corrupt_images(files, capsys):
    tmp, content, style = files
    out = str(tmp / "out.png")
    assert "not found" in error_of(capsys, ["stylize", str(tmp / "nope.png"), str(style), "-o", out, *QUICK])
    (tmp / "empty.png").write_bytes(b"")
    assert "empty" in error_of(capsys, ["stylize", str(content), str(tmp / "empty.png"), "-o", out, *QUICK])
    (tmp / "corrupt.png").write_bytes(content.read_bytes()[:60])
    assert "cannot read" in error_of(capsys, ["stylize", str(tmp / "corrupt.png"), str(style), "-o", out, *QUICK])
    (tmp / "text.jpg").write_text("not an image")
    assert "cannot read" in error_of(capsys, ["stylize", str(content), str(tmp / "text.jpg"), "-o", out, *QUICK])
    assert not os.path.exists(out)


def test_absurd_sizes_are_refused(files, capsys):
    tmp, content, style = files
    assert "size must be" in error_of(capsys, ["stylize", str(content), str(style), "-o", str(tmp / "o.png"),
                                               "--size", "100000"])
    Image.new("L", (20000, 2)).save(tmp / "wide.png")
    assert "too large" in error_of(capsys, ["stylize", str(tmp / "wide.png"), str(style), "-o", str(tmp / "o.png")])


def test_bad_weights_file_and_model(files, capsys):
    tmp, content, style = files
    (tmp / "bad.pth").write_bytes(b"\x00garbage")
    msg = error_of(capsys, ["stylize", str(content), str(style), "-o", str(tmp / "o.png"), "--weights",
                            str(tmp / "bad.pth"), *QUICK])
    assert "bad.pth" in msg
    with pytest.raises(SystemExit) as exc:  # argparse: unknown choice
        main(["stylize", str(content), str(style), "--model", "alexnet"])
    assert exc.value.code == 2


def test_output_never_overwrites_an_input(files, capsys):
    tmp, content, style = files
    before = style.read_bytes()
    assert "overwrite" in error_of(capsys, ["stylize", str(content), str(style), "-o", str(style), *QUICK])
    assert style.read_bytes() == before


def test_unwritable_output(files, capsys):
    tmp, content, style = files
    assert "does not exist" in error_of(capsys, ["stylize", str(content), str(style), "-o",
                                                 str(tmp / "no" / "dir" / "o.png"), *QUICK])
    assert "cannot write" in error_of(capsys, ["stylize", str(content), str(style), "-o", str(tmp / "o.xyz"), *QUICK])
