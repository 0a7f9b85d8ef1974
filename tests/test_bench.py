"""`python -m benchmarks.bench` at a toy size: the JSON and plot it writes, not the speed it finds."""

import json

import pytest

from benchmarks.bench import main


def test_bench_writes_rows_beside_the_study_and_a_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    code = main([
        "--models", "vgg16", "--sizes", "32,64", "--iterations", "1", "--devices", "cpu",
        "--tiled-sizes", "96x64", "--tile-size", "64", "--tiled-iterations", "2", "--microbench-size", "16",
        "--json-out", str(out), "--plot", str(plot),
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["weights_note"].startswith("random")
    assert report["study_2016"]["cpu"]["vgg19"]["256"] == 32.0
    assert report["microbench"]["cpu"]["train_gflops"] > 0
    assert [(r["model"], r["size"], r["device"]) for r in report["rows"]] == [("vgg16", 32, "cpu"), ("vgg16", 64, "cpu")]
    for row in report["rows"]:
        assert row["it_per_min"] > 0 and row["peak_mb"] > 0 and row["gflops"] > 0
        assert 0 < row["share_of_conv_microbench"]
    small, large = report["rows"]
    assert large["gflop_per_iteration"] == pytest.approx(4 * small["gflop_per_iteration"], rel=0.05)
    (tiled,) = report["tiled"]
    assert tiled["tile"] == 64 and tiled["tiles_per_pass"] >= 2 and tiled["iterations"] == 2 and tiled["seconds"] > 0
    assert plot.stat().st_size > 10_000
    assert "vgg16" in capsys.readouterr().out


def test_bench_refuses_a_missing_device(capsys):
    assert main(["--devices", "tpu"]) == 2
    assert "not available" in capsys.readouterr().err


def test_gpu_figures_run_end_to_end_in_dry_mode(tmp_path, capsys):
    """benchmarks/gpu.py at toy sizes on the CPU: every section runs and lands in the JSON (issue 24)."""
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry"] and report["skipped"] == {}
    assert [(r["model"], r["size"]) for r in report["study"]] == [("vgg19", 96), ("nin", 96)]
    assert all(r["it_per_min"] > 0 and r["peak_mb"] > 0 for r in report["study"])
    assert report["study"][0]["study_gtx960"] is None  # the study has no 96 px figure
    assert report["512px"]["seconds"] > 0 and report["512px"]["tile"] is None
    assert report["1080p"]["iterations"] == 3 and report["1080p"]["peak_mb"] > 0
    fits = report["largest"]["fits"]
    assert (fits["width"], fits["height"], fits["tile"]) == (96, 48, 64) and fits["tiles_per_pass"] >= 2
    assert report["largest"]["largest_untiled_side"] >= 64
    fp32, fp16, bf16 = report["precision"]
    assert fp32["levels_from_fp32"] == 0 and 0 < fp32["judge"]["objective"] < 100
    assert "needs a GPU" in fp16["refused"]
    assert "refused" in bf16 or bf16["judge"]["objective"] > 0  # bf16 runs on CPUs with bf16 arithmetic only
    assert "1080p" in capsys.readouterr().out


def test_gpu_figures_need_a_gpu_or_the_dry_mode(capsys):
    from benchmarks import gpu

    assert gpu.main(["--device", "cpu", "--json", "unused.json"]) == 2
    assert "--dry" in capsys.readouterr().err


def test_crop_floor_splits_the_window_error_into_bias_and_spread(tmp_path, capsys):
    from benchmarks import crop_floor

    out = tmp_path / "floor.json"
    assert crop_floor.main(["--size", "64", "--sides", "32,48", "--windows", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["sides"]
    assert [r["side"] for r in rows] == [32, 48]
    for row in rows:
        for layer in row["layers"].values():
            # The mean of the windows' Grams is nearer the whole Gram than the windows are on average (Jensen),
            # and nearer the windows than the whole Gram is (the mean minimises the squared distance to them).
            assert 0 < layer["bias"] <= layer["window"] + 1e-9
            assert 0 < layer["spread"] <= layer["window"] + 1e-9
    assert rows[1]["window"] < rows[0]["window"]  # larger windows see more of the style
    assert "| 48 | spread |" in capsys.readouterr().out


def test_crop_floor_refuses_a_window_as_large_as_the_style(tmp_path, capsys):
    from benchmarks import crop_floor

    out = tmp_path / "floor.json"
    assert crop_floor.main(["--size", "64", "--sides", "64", "--json", str(out)]) == 2
    assert "between 16 and --size (64)" in capsys.readouterr().err and not out.exists()


def test_parametrisation_pixel_loop_is_the_engines_optimisation_and_the_pyramid_starts_at_the_content():
    import numpy as np
    import torch

    from benchmarks.parametrisation import PixelImage, Pyramid, optimise
    from engine.model import prepare_network
    from engine.optimize import Targets, optimize_image
    from engine.options import StyleOptions
    from engine.progress import Reporter
    from engine.targets import content_targets, style_grams
    from engine.tensors import autocast_factory, to_tensor

    rng = np.random.default_rng(3)
    content = to_tensor(rng.random((24, 40, 3), np.float32), torch.device("cpu"))
    style = to_tensor(rng.random((32, 32, 3), np.float32), torch.device("cpu"))
    options = StyleOptions(stop_change=0, weights="random", precision="fp32")
    net, plan, device = prepare_network(options)
    autocast = autocast_factory(device, options.precision)
    targets = Targets(content_targets(net, content, plan.content, autocast),
                      style_grams(net, [style], [1.0], plan.style, autocast))
    engine = optimize_image(net, content, targets, options, plan.weights, 6, Reporter(6, None, None), autocast)
    loop = optimise(net, targets, options, plan.weights, PixelImage(content), 6, autocast)
    assert torch.equal(engine, loop) and not torch.equal(loop, content)

    pyramid = Pyramid(content, 4, 0.5)
    assert torch.equal(pyramid.image(), content)
    assert [s[2:] for s in pyramid.shapes] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    picture = optimise(net, targets, options, plan.weights, pyramid, 6, autocast)
    assert 0 <= float(picture.min()) and float(picture.max()) <= 1
    coarse = pyramid.levels(pyramid.z.detach())[3]
    assert float(coarse.abs().max()) > 0  # the coarsest level moved: the steps reach it


def test_parametrisation_refuses_an_unknown_pair(tmp_path, capsys):
    from benchmarks import parametrisation

    out = tmp_path / "p.json"
    with pytest.raises(SystemExit):
        parametrisation.main(["--pairs", "forest-strokes,nowhere", "--json", str(out)])
    assert "unknown pair nowhere" in capsys.readouterr().err and not out.exists()
