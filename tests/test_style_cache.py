"""Style Grams from onnxruntime, cached on disk and found again by style pixels, network and scale."""

import numpy as np
import pytest
import torch

from engine import StyleOptions, stylize
from engine import targets as targets_module
from engine.model import layer_plan
from engine.targets import TargetSource
from engine.tensors import autocast_factory
from engine.weights import load_network

CPU = torch.device("cpu")
# Random weights keep the weights cache out of tmp_path's way; the caching logic is the same.
BASE = StyleOptions(weights="random", seed=0, iterations=2)


def source_for(options, style, cache):
    options = options.replace(cache_dir=str(cache))
    net = load_network(options.model, options.weights, options.pooling, None, options.seed or 0)
    content_layers, style_layers, _ = layer_plan(net, options)
    net = net.truncated(content_layers + style_layers)
    return TargetSource(net, options, [style], [1.0], CPU, autocast_factory(CPU, "fp32"))


def cache_files(cache):
    return sorted((cache / targets_module.GRAMS_FOLDER).glob("*.npz"))


def forbid_style_features(monkeypatch):
    """Make any computation of style features (onnxruntime or torch) fail the test."""
    onnx_features = TargetSource._onnx_features

    def guarded(self, image, layers):
        assert layers != self.style_layers, "style features were computed although the Grams are cached"
        return onnx_features(self, image, layers)

    def fail(*args, **kwargs):
        raise AssertionError("style features were computed by torch although the Grams are cached")

    monkeypatch.setattr(TargetSource, "_onnx_features", guarded)
    monkeypatch.setattr(targets_module, "style_grams", fail)


def test_second_source_reads_the_cache_instead_of_computing(tmp_path, style_small, monkeypatch):
    first = source_for(BASE, style_small, tmp_path)
    grams = first.grams(48, 64)
    assert first.backend == "onnxruntime"  # CPU runs must not have fallen back to torch
    assert len(cache_files(tmp_path)) == 1

    forbid_style_features(monkeypatch)
    again = source_for(BASE, style_small, tmp_path).grams(48, 64)
    assert set(again) == set(grams) == set(first.style_layers)
    for name in grams:
        torch.testing.assert_close(again[name], grams[name], rtol=0, atol=0)


def test_onnxruntime_grams_match_torch(tmp_path, style_small, monkeypatch):
    by_onnx = source_for(BASE, style_small, tmp_path / "onnx").grams(48, 64)
    monkeypatch.setenv(targets_module.BACKEND_ENV, "torch")
    by_torch = source_for(BASE, style_small, tmp_path / "torch").grams(48, 64)
    for name in by_onnx:
        diff = (by_onnx[name] - by_torch[name]).abs().max() / by_torch[name].abs().max()
        assert diff < 1e-4, name


@pytest.mark.parametrize(
    "change",
    [{"style_scale": 0.5}, {"model": "vgg19"}, {"seed": 1}, {"pooling": "avg"}, {"style_layers": ("relu1_1",)}],
)
def test_scale_network_weights_and_layers_change_the_key(tmp_path, style_small, change):
    reference = source_for(BASE, style_small, tmp_path)
    changed = source_for(BASE.replace(**change), style_small, tmp_path)
    reference.grams(48, 64)
    changed.grams(48, 64)
    assert len(cache_files(tmp_path)) == 2


def test_different_style_pixels_change_the_key(tmp_path, style_small):
    source = source_for(BASE, style_small, tmp_path)
    source.grams(48, 64)
    source_for(BASE, style_small[::-1].copy(), tmp_path).grams(48, 64)
    assert len(cache_files(tmp_path)) == 2


def test_stylize_reuses_cached_grams_across_frames(tmp_path, content_small, style_small, monkeypatch):
    options = BASE.replace(cache_dir=str(tmp_path))
    first = stylize(content_small, [style_small], options)
    assert len(cache_files(tmp_path)) == 1
    forbid_style_features(monkeypatch)
    second = stylize(content_small, [style_small], options)
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_onnxruntime_failure_falls_back_to_torch(tmp_path, style_small, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxruntime failure")

    monkeypatch.setattr(targets_module.onnx_export, "session", broken)
    source = source_for(BASE, style_small, tmp_path)
    grams = source.grams(48, 64)
    assert source.backend == "torch"
    assert set(grams) == set(source.style_layers) and len(cache_files(tmp_path)) == 1


def test_unreadable_cache_file_is_recomputed(tmp_path, style_small):
    source = source_for(BASE, style_small, tmp_path)
    grams = source.grams(48, 64)
    cache_files(tmp_path)[0].write_bytes(b"not an npz")
    again = source_for(BASE, style_small, tmp_path).grams(48, 64)
    for name in grams:
        torch.testing.assert_close(again[name], grams[name])
