"""Exported feature networks: valid ONNX, outputs named after layers, dynamic size, parity with torch."""

import numpy as np
import onnx
import pytest
import torch

from engine import EngineError
from engine.cli import main
from engine.onnx_export import INPUT_NAME, export_features, providers, run, session
from engine.weights import load_network

# Relative difference: max |onnxruntime - torch| over max |torch|, per layer.
TOLERANCE = 1e-4


def max_relative_difference(net, path, layers, height, width):
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    outputs = run(session(path, "cpu"), image.numpy())
    with torch.no_grad():
        expected = net(image, layers)
    diffs = {}
    for name, got in zip(layers, outputs):
        want = expected[name].numpy()
        assert got.shape == want.shape
        diffs[name] = float(np.abs(got - want).max() / np.abs(want).max())
    return diffs


@pytest.mark.parametrize(
    "model, weights, layers, sizes",
    [
        ("vgg16", "packaged", ("relu1_1", "relu2_2", "relu3_1", "relu4_2"), ((40, 56), (67, 50))),
        # NIN with random weights (no NIN file ships offline): parity of the graph, not of ImageNet features.
        ("nin", "random", ("relu0", "relu3", "relu7", "relu12"), ((72, 64), (91, 77))),
    ],
)
def test_export_is_valid_named_dynamic_and_matches_torch(tmp_path, model, weights, layers, sizes):
    net = load_network(model, weights, "max")
    path = export_features(net, layers, tmp_path / f"{model}.onnx")

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == list(layers)
    assert [i.name for i in graph.graph.input] == [INPUT_NAME]
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param  # height, width symbolic

    for height, width in sizes:
        diffs = max_relative_difference(net, path, layers, height, width)
        assert max(diffs.values()) < TOLERANCE, diffs


def test_export_only_runs_as_deep_as_needed(tmp_path):
    net = load_network("vgg16", "random", "max")
    shallow = export_features(net, ("relu1_1",), tmp_path / "shallow.onnx")
    deep = export_features(net, ("relu1_1", "relu3_1"), tmp_path / "deep.onnx")
    convs = [sum(n.op_type == "Conv" for n in onnx.load(str(p)).graph.node) for p in (shallow, deep)]
    assert convs == [1, 5]


def test_unknown_layer_is_one_clear_error(tmp_path):
    with pytest.raises(EngineError, match="no layer 'relu9_9'"):
        export_features(load_network("vgg16", "random", "max"), ("relu9_9",), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_cpu_is_always_a_provider():
    assert providers("cpu") == ["CPUExecutionProvider"]
    assert providers("auto")[-1] == "CPUExecutionProvider"


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "features.onnx"
    args = ["export-onnx", "--model", "vgg16", "--weights", "random", "--layers", "relu1_1,relu2_1", "-o", str(out)]
    assert main(args) == 0
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["relu1_1", "relu2_1"]
    assert main(["export-onnx", "--layers", "nope", "--weights", "random", "-o", str(tmp_path / "y.onnx")]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Specified provider 'CoreMLExecutionProvider' is not in available provider names")
def test_providers_follow_what_the_installed_onnxruntime_offers(monkeypatch, tmp_path):
    """macOS's plain onnxruntime offers CoreML: "auto" and "mps" take it first (as a float32 ML Program), the CPU
    after it; "cpu" never does; a CUDA-only onnxruntime gives "mps" the CPU.  The session is created for real,
    with those providers and their options (onnxruntime here has no CoreML, so the CPU runs it)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from engine import onnx_export

    monkeypatch.setattr(onnx_export, "cuda_works", lambda: False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CoreMLExecutionProvider", "CPUExecutionProvider"])
    assert providers("auto") == providers("mps") == ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert providers("cpu") == ["CPUExecutionProvider"]
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 2, 2]) for n in (INPUT_NAME, "y")]
    graph = helper.make_graph([helper.make_node("Relu", [INPUT_NAME], ["y"])], "g", value[:1], value[1:])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    image = np.full((1, 3, 2, 2), -1.0, dtype=np.float32)
    assert run(session(path, "mps"), image)[0].max() == 0.0
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers("mps") == ["CPUExecutionProvider"]
