"""Tiled optimisation: grid, blend weights, memory planning, Grams by cores, OOM retry.

Networks use random weights and shallow layers: these tests check the tiling
arithmetic and plumbing, which do not depend on what the weights learned.
"""

import numpy as np
import pytest
import torch

from engine import EngineError, StyleOptions, memory, stylize, tiling
from engine.images import resize
from engine.pipeline import stylize as engine_stylize
from engine.targets import TargetSource, style_grams
from engine.tensors import autocast_factory
from engine.weights import load_network

SHALLOW = dict(weights="random", model="vgg16", content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
FP32 = autocast_factory(torch.device("cpu"), "fp32")


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> StyleOptions:
    return StyleOptions(seed=1, tile_overlap=16, cache_dir=str(tmp_path_factory.mktemp("cache")), **SHALLOW)


@pytest.mark.parametrize("height, width, tile, overlap, passes", [(100, 230, 64, 16, 3), (64, 64, 64, 16, 2), (37, 300, 96, 24, 2)])
def test_every_pass_covers_every_pixel_with_positive_weight(height, width, tile, overlap, passes):
    for p in range(passes):
        total = torch.zeros(1, 1, height, width)
        for box in tiling.grid(height, width, tile, overlap, p, passes):
            assert 0 <= box.y0 < box.y1 <= height and 0 <= box.x0 < box.x1 <= width
            assert min(overlap, height) < box.y1 - box.y0 <= tile and min(overlap, width) < box.x1 - box.x0 <= tile
            weight = tiling.feather(box, height, width, overlap, torch.device("cpu"))
            assert weight.shape[-2:] == (box.y1 - box.y0, box.x1 - box.x0) and (weight > 0).all()
            box.of(total).add_(weight)
        assert (total > 0).all()


def test_tiles_share_the_length_evenly():
    spans = tiling.axis_spans(2048, 1650, 64)
    assert spans == [(0, 1056), (992, 2048)]  # two 1056 px tiles, not 1650 + a sliver


def test_grid_shifts_between_passes_so_borders_move():
    passes = 2
    borders = []
    for p in range(passes):
        boxes = tiling.grid(300, 300, 100, 20, p, passes)
        borders.append({b.x0 for b in boxes if b.x0 > 0} | {b.x1 for b in boxes if b.x1 < 300})
    assert borders[0] and borders[1] and not borders[0] & borders[1]


def test_feather_is_one_inside_and_ramps_towards_neighbours():
    box = tiling.Box(0, 64, 50, 114)  # top edge on the image border, neighbours left and right
    weight = tiling.feather(box, 64, 200, 16, torch.device("cpu"))[0, 0]
    assert torch.equal(weight[:, 16:-16], torch.ones(64, 32))
    assert torch.all(weight[:, :16].diff(dim=1) > 0) and torch.all(weight[:, -16:].diff(dim=1) < 0)
    assert torch.equal(weight[0], weight[-1])  # no ramp on the image border


def test_tile_size_grows_with_the_memory_budget():
    geo = memory.geometry(load_network("vgg19", "random", "max").truncated(("relu5_1",)))
    sides = [memory.tile_for_budget(gib * 2**30, geo, "lbfgs") for gib in (0.5, 1, 2, 4, 8, 16)]
    assert sides == sorted(sides) and sides[0] < sides[-1]
    assert sides[0] == memory.MIN_TILE and all(s % geo.stride == 0 for s in sides)
    # The chosen tile's estimated peak stays inside the budget.
    need = memory.FIXED_BYTES + sides[-1] ** 2 * memory.bytes_per_pixel(geo, "lbfgs")
    assert need <= 16 * 2**30


def test_8k_on_a_24_gb_machine_is_planned_in_tiles_with_cored_style_grams(options, monkeypatch):
    monkeypatch.setattr(memory, "free_memory", lambda device: 24 * 2**30)
    net = load_network("vgg16", "random", "max").truncated(("relu4_2", "relu5_1"))
    planned = options.replace(content_layers=None, style_layers=None)
    source = TargetSource(net, planned, [np.zeros((512, 512, 3), np.float32)], [1.0], torch.device("cpu"), FP32)
    tiler = tiling.Tiler(net, source, {}, FP32)
    assert tiler.tile(4320 // 8, 7680 // 8) is None  # the coarse scales run whole
    tile = tiler.tile(4320, 7680)
    assert memory.MIN_TILE < tile < 4320
    assert memory.FIXED_BYTES + tile**2 * memory.bytes_per_pixel(tiler.geo, "lbfgs") <= tiler.budget
    assert not tiler._fits(7680 * 7680, None)  # the 8K style image's Grams go by cores


@pytest.mark.parametrize("model, layers", [("vgg16", ("relu1_1", "relu2_1", "relu3_1")), ("nin", ("relu0", "relu3"))])
def test_grams_by_cores_equal_whole_image_grams(model, layers):
    net = load_network(model, "random", "max", seed=3).truncated(layers)
    image = torch.rand(1, 3, 88, 120, generator=torch.Generator().manual_seed(0))
    geo = memory.geometry(net)
    whole = style_grams(net, [image], [1.0], layers, FP32)
    cored = tiling.cored_grams(net, image, layers, FP32, 32, geo)
    for name in layers:
        torch.testing.assert_close(cored[name], whole[name], rtol=1e-4, atol=1e-6)


def test_blending_unchanged_tiles_gives_back_the_image(options, monkeypatch):
    """Feathered weights are normalised: where tiles overlap by more than the ramp (edge
    tiles widened inwards, corners) the blend must still reproduce the pixels exactly."""
    monkeypatch.setattr(tiling, "optimize_image", lambda net, image, *args, **kwargs: image)
    content = np.random.default_rng(0).random((100, 150, 3)).astype(np.float32)
    out = stylize(content, [content], options.replace(iterations=4, tile_size=64, tile_passes=4))
    np.testing.assert_allclose(out, content, atol=1e-5)


def test_tiled_run_agrees_with_untiled_run(options, content_small, style_small):
    """Adam moves each pixel by about lr per step whatever the tiling, so the two runs are
    comparable step for step.  Unrelated results (a misplaced or unnormalised tile) differ by
    about sqrt(2) x the distance each moved from the content; tiling only changes context at
    tile borders, so the tiled result must be much nearer the untiled one than that."""
    run = options.replace(optimizer="adam", iterations=6, tile_passes=2)
    untiled = stylize(content_small, [style_small], run.replace(tile_size=-1))
    seen = []
    tiled = stylize(content_small, [style_small], run.replace(tile_size=64), progress=seen.append)
    assert any("tile 2/" in p.stage for p in seen)
    moved = np.abs(untiled - content_small[..., :3]).mean()
    assert moved > 0.01
    assert np.abs(tiled - untiled).mean() < 0.6 * moved


def test_out_of_memory_retries_with_smaller_tiles(options, content_small, style_small, monkeypatch):
    """Only 64x64 tiles 'fit': the whole image, then tiles of up to 128 px fail before 64 px tiles run."""
    real = tiling.optimize_image
    sizes = []

    def small_memory(net, image, *args, **kwargs):
        sizes.append(tuple(image.shape[-2:]))
        if image.shape[-1] * image.shape[-2] > 64 * 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by the test)")
        return real(net, image, *args, **kwargs)

    monkeypatch.setattr(tiling, "optimize_image", small_memory)
    content = resize(content_small, 192, 256)
    seen = []
    out = stylize(content, [style_small], options.replace(iterations=1, tile_passes=1, tile_size=0), progress=seen.append)
    assert out.shape == content[..., :3].shape and np.isfinite(out).all()
    assert sizes[0] == (192, 256) and 64 * 64 < sizes[1][0] * sizes[1][1] <= 128 * 128
    assert all(h * w <= 64 * 64 for h, w in sizes[2:])
    assert "tile" in seen[-1].stage and seen[-1].iteration == seen[-1].total


def test_out_of_memory_without_tiling_is_one_clear_error(options, content_small, style_small, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (forced by the test)")

    monkeypatch.setattr(tiling, "optimize_image", no_memory)
    with pytest.raises(EngineError, match="out of memory"):
        stylize(content_small, [style_small], options.replace(iterations=2, tile_size=-1))


def test_tiles_see_whole_image_extra_losses(content_small, style_small, options):
    """An extra (e.g. temporal) loss is defined on the whole image; each tile is judged in place."""
    target = torch.full((1, 3, *content_small.shape[:2]), 0.5)

    def pull_to_grey(image):
        assert image.shape == target.shape
        return 1e3 * (image - target).pow(2).mean()

    out = engine_stylize(
        content_small, [style_small], options.replace(optimizer="adam", iterations=4, tile_size=64), extra_losses=(pull_to_grey,)
    )
    assert np.abs(out - 0.5).mean() < np.abs(content_small[..., :3] - 0.5).mean()
