"""The optimisation itself, with the real packaged VGG-16 unless a test says otherwise."""

import numpy as np
import pytest
import torch

from engine import Cancelled, EngineError, StyleOptions, stylize
from engine.losses import gram
from engine.networks import FeatureNet
from engine import pipeline
from engine.pipeline import preserve_colors, scale_sizes
from engine.tensors import to_tensor
from engine.weights import load_network

FAST = StyleOptions(iterations=12, seed=0)


def run(content, style, **changes):
    seen = []
    out = stylize(content, [style], FAST.replace(**changes), progress=seen.append)
    return out, seen


def test_loss_falls_and_progress_reports_every_iteration(content_small, style_small):
    out, seen = run(content_small, style_small)
    assert [p.iteration for p in seen] == list(range(1, 13))
    assert all(p.total == 12 for p in seen)
    assert seen[-1].losses["total"] < 0.5 * seen[0].losses["total"]
    assert out.shape == content_small.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert seen[-1].image().shape == content_small.shape


def test_gram_statistics_move_from_content_towards_style(content_small, style_small):
    out, _ = run(content_small, style_small, iterations=25)
    net = load_network("vgg16", "packaged", "max")
    layers = ("relu1_1", "relu2_1", "relu3_1")

    def grams(img):
        with torch.no_grad():
            feats = net(to_tensor(img, torch.device("cpu")), layers)
        return [gram(feats[name]) for name in layers]

    target = grams(style_small)
    before = sum(float((g - t).norm() / t.norm()) for g, t in zip(grams(content_small), target))
    after = sum(float((g - t).norm() / t.norm()) for g, t in zip(grams(out), target))
    assert after < 0.6 * before


def test_seed_makes_noise_init_repeatable(content_small, style_small):
    a, _ = run(content_small, style_small, init="noise", iterations=4, seed=3)
    b, _ = run(content_small, style_small, init="noise", iterations=4, seed=3)
    c, _ = run(content_small, style_small, init="noise", iterations=4, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


def yiq_chroma(img):
    m = np.array([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    return img[..., :3] @ m.T


def test_preserve_colors_keeps_content_chroma(content_small, style_small):
    plain, _ = run(content_small, style_small)
    kept, _ = run(content_small, style_small, preserve_colors=True)
    # Away from clipping, the chroma is the content's exactly; the plain result's is not.
    assert np.abs(yiq_chroma(kept) - yiq_chroma(content_small[..., :3])).mean() < 0.02
    assert np.abs(yiq_chroma(plain) - yiq_chroma(content_small[..., :3])).mean() > 0.03
    # And the luminance is the stylized one, not the content's.
    np.testing.assert_allclose(preserve_colors(plain, content_small[..., :3]).shape, plain.shape)


def test_alpha_passes_through_and_output_size_follows_option(content_small, style_small):
    rgba = np.concatenate([content_small, np.linspace(0, 1, content_small.shape[1])[None, :, None]
                           .repeat(content_small.shape[0], 0).astype(np.float32)], axis=2)
    out, _ = run(rgba, style_small, iterations=2)
    assert out.shape == rgba.shape
    np.testing.assert_allclose(out[..., 3], rgba[..., 3], atol=1e-6)
    bigger, _ = run(content_small, style_small, iterations=2, size=96)
    assert bigger.shape == (64, 96, 3)


def test_several_styles_blend_and_adam_runs(content_small, style_small):
    flat = np.full_like(style_small, 0.5)
    out = stylize(content_small, [style_small, flat], FAST.replace(style_blend_weights=(3, 1), optimizer="adam"))
    assert out.shape == content_small.shape
    with pytest.raises(EngineError, match="blend weight"):
        stylize(content_small, [style_small, flat], FAST.replace(style_blend_weights=(1,)))


@pytest.mark.parametrize("model", ["vgg19", "vgg16", "nin"])
def test_every_model_runs_forward_and_backward(model):
    # Random weights: this checks the architecture only, not the look.
    net = load_network(model, "random", "avg" if model == "nin" else "max", seed=1)
    spec = net.spec
    image = torch.rand(1, 3, 96, 80, requires_grad=True)
    feats = net(image, spec.content_layers + spec.style_layers)
    assert set(feats) == set(spec.content_layers + spec.style_layers)
    sum(f.pow(2).mean() for f in feats.values()).backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["vgg19", "nin"])
def test_other_models_stylize_end_to_end(model, content_small, style_small):
    out = stylize(content_small, [style_small], FAST.replace(model=model, weights="random", iterations=3, size=96))
    assert out.shape[:2] == (64, 96)


def test_truncation_drops_unused_layers():
    net = FeatureNet("vgg19").truncated(("relu2_1",))
    assert len(net.features) == net.spec.layer_names.index("relu2_1") + 1


def test_cancel_stops_the_run(content_small, style_small):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        stylize(content_small, [style_small], FAST, cancel=cancel)


def test_coarse_to_fine_scales():
    opts = StyleOptions(min_scale_size=256)
    assert scale_sizes(300, 400, opts) == [(300, 400)]
    sizes = scale_sizes(2160, 3840, opts)
    assert sizes[-1] == (2160, 3840) and len(sizes) == 5 and sizes[0][1] == 240
    assert scale_sizes(400, 400, opts.replace(scales=3)) == [(100, 100), (200, 200), (400, 400)]
    # Never so many scales that the first is below 64 px.
    assert scale_sizes(100, 100, opts.replace(scales=3)) == [(100, 100)]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model": "resnet"}, "unknown model"),
        ({"size": 100000}, "size must be"),
        ({"iterations": 0}, "iterations"),
        ({"init": "image"}, "init_image"),
        ({"style_weight": -1}, "negative"),
    ],
)
def test_bad_options_are_refused(changes, message):
    with pytest.raises(EngineError, match=message):
        StyleOptions(**changes)


def test_bad_arrays_are_refused(content_small, style_small):
    with pytest.raises(EngineError, match="HxWx3"):
        stylize(content_small[..., 0], [style_small], FAST)
    with pytest.raises(EngineError, match="NaN"):
        stylize(np.full_like(content_small, np.nan), [style_small], FAST)
    with pytest.raises(EngineError, match="at least one style"):
        stylize(content_small, [], FAST)
    with pytest.raises(EngineError, match="VGG-16 only"):
        stylize(content_small, [style_small], FAST.replace(model="vgg19"))


def test_a_loss_that_becomes_non_finite_stops_the_run(content_small, style_small):
    """A loss that overflows (here an extra loss, like temporal coherence's) ends in one clear error, not a black image."""

    def overflowing(image):
        return image.sum() * float("inf")

    seen = []
    with pytest.raises(EngineError, match=r"the loss became NaN/infinite \(temporal, total\); check the weights/options"):
        pipeline.stylize(content_small, [style_small], FAST, progress=seen.append, extra_losses=(overflowing,))
    assert seen == []  # stopped at the first step, before reporting a result


def test_gram_gradient_is_the_two_factor_gradient():
    """`losses.gram` computes its gradient with one product (G' + G'^T) F; it must equal autograd's two."""
    from engine.losses import channel_products, gram

    torch.manual_seed(0)
    features = torch.rand(2, 6, 5, 7, requires_grad=True)
    upstream = torch.rand(2, 6, 6)  # not symmetric: the general case
    (gram(features) * upstream).sum().backward()
    ours = features.grad.clone()
    features.grad = None
    flat = features.reshape(2, 6, 35)
    ((torch.bmm(flat, flat.transpose(1, 2)) / (6 * 35)) * upstream).sum().backward()
    torch.testing.assert_close(ours, features.grad, rtol=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(channel_products, (torch.rand(2, 4, 9, dtype=torch.float64, requires_grad=True),))
