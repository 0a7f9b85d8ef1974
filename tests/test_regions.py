"""Spatial control (engine/regions.py): a style per region with guided Grams, masks from files or Cryptomatte."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine import EngineError, StyleOptions, stylize
from engine.exr import cryptomatte, read_render
from engine.losses import guided_style_loss, style_loss
from engine.model import prepare_network
from engine.regions import Guide, Region, check_regions, resolve
from engine.targets import StyleMix, TargetSource
from engine.tensors import autocast_factory, to_tensor

QUICK = StyleOptions(iterations=30, seed=0, device="cpu")


def stripes(size: int = 64) -> np.ndarray:
    """Black and white diagonal stripes: nothing like the sample painting."""
    y, x = np.mgrid[0:size, 0:size]
    return np.repeat((((x + y) // 4) % 2).astype(np.float32)[..., None], 3, axis=2)


def halves(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((height, width), np.float32)
    left[:, : width // 2] = 1
    return left, 1 - left


def distances(result: np.ndarray, styles: list[np.ndarray], mask: np.ndarray) -> list[float]:
    """Relative guided-Gram error inside `mask` to each style (the loss's own measure)."""
    device = torch.device("cpu")
    net, plan, _ = prepare_network(QUICK, device)
    source = TargetSource(net, QUICK, styles, [1.0] * len(styles), device, autocast_factory(device, "fp32"))
    h, w = result.shape[:2]
    with torch.no_grad():
        feats = net(to_tensor(result[..., :3], device), plan.style)
        guide_mask = torch.from_numpy(mask)[None, None]
        return [float(guided_style_loss(feats, [Guide(source.grams(h, w, StyleMix((i,), (1.0,), 1.0)), guide_mask, 1.0)],
                                        plan.weights)) / float(guide_mask.mean()) for i in range(len(styles))]


def test_each_region_takes_its_own_style(content_small, style_small):
    h, w = content_small.shape[:2]
    left, right = halves(h, w)
    styles = [style_small, stripes()]
    out = stylize(content_small, styles, QUICK, regions=[Region(left, (0,)), Region(right, (1,))])
    left_to = distances(out, styles, left)
    right_to = distances(out, styles, right)
    assert left_to[0] < 0.5 * left_to[1], left_to
    assert right_to[1] < 0.5 * right_to[0], right_to


def test_one_region_over_everything_is_the_plain_run(content_small, style_small):
    options = QUICK.replace(iterations=8)
    plain = stylize(content_small, [style_small], options)
    whole = np.ones(content_small.shape[:2], np.float32)
    np.testing.assert_allclose(stylize(content_small, [style_small], options, regions=[Region(whole, (0,))]),
                               plain, atol=1e-6)


def test_guided_loss_with_a_full_mask_equals_the_style_loss():
    feats = {"a": torch.rand(1, 8, 12, 10), "b": torch.rand(1, 16, 6, 5)}
    grams = {name: torch.rand(1, f.shape[1], f.shape[1]) for name, f in feats.items()}
    weights = {"a": 1.0, "b": 0.5}
    guide = Guide(grams, torch.ones(1, 1, 12, 10), 1.0)
    torch.testing.assert_close(guided_style_loss(feats, [guide], weights), style_loss(feats, grams, weights))


def test_keep_region_stays_as_the_content_with_tiles_and_coarse_to_fine(content_small, style_small):
    content = np.concatenate([content_small, content_small], axis=1)  # 48 x 144: tiled at 64 px
    h, w = content.shape[:2]
    left, right = halves(h, w)
    options = QUICK.replace(iterations=6, tile_size=64, tile_overlap=16, scales=2)
    out = stylize(content, [style_small], options, regions=[Region(left, (0,)), Region(right, ())])
    np.testing.assert_allclose(out[:, w // 2 + 2:], content[:, w // 2 + 2:], atol=1e-5)
    assert np.abs(out[:, : w // 2 - 2] - content[:, : w // 2 - 2]).mean() > 0.02


def test_overlapping_masks_are_shared_and_resized_to_the_content():
    mask = np.ones((24, 36), np.float32)  # half the content's size, same aspect
    a, b = check_regions([Region(mask, (0,)), Region(mask, (0,))], 1, 48, 72)
    assert a.mask.shape == (48, 72)
    np.testing.assert_allclose(a.mask + b.mask, 1.0, atol=1e-5)


@pytest.mark.parametrize("region, message", [
    (Region(np.ones((10, 40), np.float32), (0,)), "not the content's shape"),
    (Region(np.full((48, 72), 2.0, np.float32), (0,)), r"must lie in \[0, 1\]"),
    (Region(np.full((48, 72), np.nan, np.float32), (0,)), "finite numbers"),
    (Region(np.ones((48, 72), np.float32), (3,)), "names style 3, but the run has 1 style"),
    (Region(np.ones((48, 72), np.float32), (0,), blend=(1.0, 2.0)), "one non-negative blend weight per style"),
    (Region(np.ones((48, 72), np.float32), (0,), style_scale=9.0), "style scale of region 1"),
])
def test_bad_regions_are_one_sentence(content_small, style_small, region, message):
    with pytest.raises(EngineError, match=message):
        stylize(content_small, [style_small], QUICK, regions=[region])


def test_json_regions_resolve_files_and_the_rest(tmp_path):
    left, _ = halves(8, 12)
    np.save(tmp_path / "left.npy", left)
    regions = resolve([{"styles": [0], "mask": {"file": str(tmp_path / "left.npy")}}, {"mask": "rest"}], 8, 12)
    np.testing.assert_array_equal(regions[0].mask, left)
    np.testing.assert_array_equal(regions[1].mask, 1 - left)
    assert regions[1].keep and not regions[0].keep
    for specs, message in [
        ([{"mask": "rest"}, {"mask": "rest"}], "only one region can be the rest"),
        ([{"styles": [0]}], "region 1 needs a mask"),
        ([{"mask": {"object": ["Cube"]}}], "give the render's EXR"),
        ([{"mask": {"paint": "x"}}], "the mask of region 1 must be"),
        ([{"mask": "rest", "colour": 1}], "unknown field"),
    ]:
        with pytest.raises(EngineError, match=message):
            resolve(specs, 8, 12)


@pytest.fixture(scope="module")
def crypto_render(tmp_path_factory) -> str:
    """A Cycles render of two objects with the Cryptomatte Object and Material passes, as a multilayer EXR."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 8
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    for name, x in (("Hero", -1.3), ("Back Ball", 1.3)):
        bpy.ops.mesh.primitive_uv_sphere_add(location=(x, 0, 0))
        bpy.context.object.name = name
        material = bpy.data.materials.new(f"{name} paint")
        bpy.context.object.data.materials.append(material)
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(camera)
    camera.location, camera.rotation_euler = (0, -7, 0), (np.pi / 2, 0, 0)
    scene.camera = camera
    layer = scene.view_layers[0]
    layer.use_pass_cryptomatte_object = layer.use_pass_cryptomatte_material = True
    bpy.ops.render.render()
    settings = scene.render.image_settings
    settings.media_type, settings.file_format, settings.color_depth = "MULTI_LAYER_IMAGE", "OPEN_EXR_MULTILAYER", "32"
    path = tmp_path_factory.mktemp("crypto") / "render.exr"
    bpy.data.images["Render Result"].save_render(str(path))
    return str(path)


def test_cryptomatte_gives_soft_coverage_per_object_and_material(crypto_render):
    hero = cryptomatte(crypto_render, "object", ["Hero"])
    ball = cryptomatte(crypto_render, "object", ["Back Ball"])
    assert hero.shape == (32, 48) and hero[:, :20].sum() > 50 and hero[:, 28:].sum() == 0
    assert ball[:, 28:].sum() > 50 and ball[:, :20].sum() == 0
    assert ((hero > 0.02) & (hero < 0.98)).sum() > 10  # anti-aliased edges, not index steps
    assert (hero + ball).max() <= 1 + 1e-5
    np.testing.assert_allclose(cryptomatte(crypto_render, "material", ["Hero paint"]), hero, atol=1e-6)
    both = cryptomatte(crypto_render, "object", ["Hero", "Back Ball"])
    np.testing.assert_allclose(both, hero + ball, atol=1e-6)
    assert cryptomatte(crypto_render, "object", ["Nobody"]).sum() == 0


def test_a_render_without_the_pass_is_one_sentence(crypto_render, tmp_path):
    with pytest.raises(EngineError, match="has no CryptoAsset pass"):
        cryptomatte(crypto_render, "asset", ["x"])


def test_worker_stylizes_regions_from_cryptomatte(crypto_render, style_small, tmp_path):
    """The add-on's request: content pixels, a region from Cryptomatte names, the rest kept as rendered."""
    content = read_render(crypto_render).image
    np.save(tmp_path / "content.npy", content)
    np.save(tmp_path / "style.npy", style_small)
    request = {"cmd": "stylize", "id": 1, "content": str(tmp_path / "content.npy"),
               "styles": [str(tmp_path / "style.npy")], "output": str(tmp_path / "out.npy"),
               "options": {"weights": "random", "iterations": 4, "seed": 0},
               "regions": [{"styles": [0], "mask": {"object": ["Hero"]}}, {"mask": "rest"}], "mattes": crypto_render}
    bad = {**request, "id": 2, "regions": [{"styles": [0], "mask": {"file": str(tmp_path / "missing.npy")}}]}
    proc = subprocess.Popen([sys.executable, "-m", "engine.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for r in (bad, request):
            proc.stdin.write(json.dumps(r) + "\n")
        proc.stdin.flush()
        ends = []
        while len(ends) < 2:
            event = json.loads(proc.stdout.readline())
            if event["event"] in ("done", "error"):
                ends.append(event)
        proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert ends[0]["event"] == "error" and "file not found" in ends[0]["message"], ends
    assert ends[1]["event"] == "done", ends
    out = np.load(tmp_path / "out.npy")
    hero = cryptomatte(crypto_render, "object", ["Hero"])
    outside = hero == 0
    np.testing.assert_allclose(out[outside][:, :3], content[outside][:, :3], atol=1e-5)
    inside = hero == 1
    assert np.abs(out[inside][:, :3] - content[inside][:, :3]).mean() > 0.01


def test_cli_takes_a_mask_per_style(tmp_path, content_small, style_small):
    from engine.images import write_image

    write_image(tmp_path / "content.png", content_small)
    write_image(tmp_path / "style.png", style_small)
    left, _ = halves(48, 72)
    write_image(tmp_path / "left.png", np.repeat(left[..., None], 3, axis=2))
    cli = [sys.executable, "-m", "engine.cli", "stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png")]
    run = subprocess.run(cli + ["--mask", str(tmp_path / "left.png"), "--iterations", "5", "--weights", "random",
                                "-o", str(tmp_path / "out.png"), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from engine.images import read_image

    out = read_image(tmp_path / "out.png")
    np.testing.assert_allclose(out[:, 40:, :3], content_small[:, 40:, :3], atol=1 / 255 + 1e-6)  # no 'rest': kept
    assert np.abs(out[:, :32, :3] - content_small[:, :32, :3]).mean() > 0.01
    wrong = subprocess.run(cli + ["--mask", "rest", "--mask", "rest", "-o", str(tmp_path / "x.png")],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "one --mask per style" in wrong.stderr
    assert not (tmp_path / "x.png").exists()


def test_depth_bands_sum_to_one_and_strokes_shrink_with_distance():
    from engine.regions import depth_bands, finer_with_distance

    depth = np.tile(np.geomspace(1, 50, 40, dtype=np.float32), (8, 1))
    depth[:, -5:] = 1e10  # nothing hit: the far end
    bands = depth_bands(depth, 4)
    np.testing.assert_allclose(sum(mask for mask, _ in bands), 1.0, atol=1e-6)
    assert bands[0][0][:, 0].min() == 1 and bands[-1][0][:, -1].min() == 1  # nearest / farthest
    split = finer_with_distance(None, 2, depth, 0.25, 1.0, blend=(3.0, 1.0))
    assert [round(r.style_scale, 3) for r in split] == [1.0, 0.63, 0.397, 0.25]
    assert all(r.styles == (0, 1) and r.blend == (3.0, 1.0) for r in split)
    kept = Region(np.ones((8, 40), np.float32))
    assert finer_with_distance([kept], 1, depth, 0.5, 1.0) == [kept]
    with pytest.raises(EngineError, match="between 0.05 and 1"):
        finer_with_distance(None, 1, depth, 2.0, 1.0)


def test_worker_depth_scale_reads_the_depth_pass(crypto_render, style_small, tmp_path):
    """Far Stroke Size from the add-on: the worker (and a shot) splits the picture by the render's Depth pass."""
    from engine.regions import for_frame

    options = StyleOptions(style_scale=0.8)
    with pytest.raises(EngineError, match="has no Depth pass"):
        for_frame(None, 32, 48, 1, options, crypto_render, 0.5)
    with pytest.raises(EngineError, match="needs the render's multilayer EXR"):
        for_frame(None, 32, 48, 1, options, None, 0.5)


def sequence_cli(frames, style, out, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "stylize-sequence", str(frames), str(style),
                           "-o", str(out), "--weights", "random", "-n", "4", "--scales", "1", "--seed", "0",
                           "--flow", "opencv", "--quiet", *flags], capture_output=True, text=True)


def test_a_shot_takes_a_mask_per_frame_and_keeps_its_highlights(tmp_path, style_small):
    """`stylize-sequence --mask FOLDER`: frame i takes mask i (a square moving across scene-linear EXR frames with
    a highlight at sRGB 3.0); the rest of each frame stays as it was, the highlight keeps its range."""
    from engine.images import read_image, write_image

    for name in ("frames", "masks"):
        (tmp_path / name).mkdir()
    write_image(tmp_path / "style.png", style_small)
    y, x = np.mgrid[0:24, 0:32] / 32.0
    squares = []
    for i in range(3):
        frame = np.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x], axis=2).astype(np.float32)
        square = (slice(8, 16), slice(4 + 6 * i, 12 + 6 * i))
        frame[square] = (3.0, 2.0, 0.5)
        mask = np.zeros((24, 32, 3), np.float32)
        mask[square] = 1
        write_image(tmp_path / "frames" / f"f_{i + 1}.exr", frame)
        write_image(tmp_path / "masks" / f"m_{i + 1}.png", mask)
        squares.append(square)
    run = sequence_cli(tmp_path / "frames", tmp_path / "style.png", tmp_path / "out", "--mask", str(tmp_path / "masks"),
                       "--format", "exr")
    assert run.returncode == 0, run.stderr
    for i, square in enumerate(squares):
        content, out = (read_image(tmp_path / f / f"f_{i + 1}.exr", hdr=True) for f in ("frames", "out"))
        kept = np.ones((24, 32), bool)
        kept[7:17, 3 + 6 * i: 13 + 6 * i] = False
        np.testing.assert_allclose(out[kept], content[kept], atol=2e-3)
        assert out[square].max() > 2.0 and np.abs(out[square] - content[square]).mean() > 0.01
    short = sequence_cli(tmp_path / "frames", tmp_path / "style.png", tmp_path / "x", "--mask", str(tmp_path / "frames" / ".."))
    assert short.returncode == 2 and short.stderr.count("\n") == 1 and not (tmp_path / "x").exists(), short.stderr


def test_a_shot_of_renders_takes_cryptomatte_masks_from_each_frame(crypto_render, style_small, tmp_path):
    """`--mask object:Hero` over frames that are Blender multilayer EXRs: each frame's own Cryptomatte pass."""
    import shutil

    from engine.images import read_image, write_image

    (tmp_path / "frames").mkdir()
    for i in (1, 2):
        shutil.copy(crypto_render, tmp_path / "frames" / f"render_{i}.exr")
    write_image(tmp_path / "style.png", style_small)
    run = sequence_cli(tmp_path / "frames", tmp_path / "style.png", tmp_path / "out", "--mask", "object:Hero")
    assert run.returncode == 0, run.stderr
    hero = cryptomatte(crypto_render, "object", ["Hero"])
    content = read_render(crypto_render).image
    for i in (1, 2):
        out = read_image(tmp_path / "out" / f"render_{i}.png")
        np.testing.assert_allclose(out[hero == 0][:, :3], content[hero == 0][:, :3], atol=1.5 / 255)
        assert np.abs(out[hero == 1][:, :3] - content[hero == 1][:, :3]).mean() > 0.01
    plain = tmp_path / "plain"
    plain.mkdir()
    write_image(plain / "f_1.png", content)
    refused = sequence_cli(plain, tmp_path / "style.png", tmp_path / "y", "--mask", "object:Hero")
    assert refused.returncode == 2 and "multilayer EXR render (mattes)" in refused.stderr, refused.stderr


def test_tiles_run_elsewhere_carry_their_regions(content_small, style_small, monkeypatch):
    """The Ray tile runner's task (engine.distributed._tile_task), run in this process: a tiled run with regions
    gives what the local tiled run gives."""
    from engine import distributed

    monkeypatch.setenv("NEURAL_STYLE_TARGETS", "torch")  # the task computes content targets with torch
    content = np.concatenate([content_small, content_small], axis=1)
    h, w = content.shape[:2]
    left, right = halves(h, w)
    options = QUICK.replace(iterations=4, tile_size=64, tile_overlap=16, scales=1, tile_passes=1)
    regions = [Region(left, (0,)), Region(right, (1,))]
    styles = [style_small, stripes()]

    def runner(starts, contents, grams, iterations, reporter, guides=None):
        assert guides is not None and len(guides) == len(starts)
        region_grams = [distributed._numpy(g.grams) for g in guides[0]]
        outs = []
        for start, tile, tile_guides in zip(starts, contents, guides):
            masks = [(g.mask.numpy(), g.weight) for g in tile_guides]
            out, _ = distributed._tile_task(options.to_dict(), start.numpy(), tile.numpy(),
                                            distributed._numpy(grams), iterations, region_grams, masks)
            outs.append(torch.from_numpy(out))
        return outs

    from engine.pipeline import stylize as pipeline_stylize

    here = pipeline_stylize(content, styles, options, regions=regions)
    elsewhere = pipeline_stylize(content, styles, options, regions=regions, tile_runner=runner)
    np.testing.assert_allclose(elsewhere, here, atol=1e-4)
