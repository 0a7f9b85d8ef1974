"""Torch modules as ONNX files with dynamic height and width, and the onnxruntime
sessions that run them (CUDA when it really works, else CPU).

Feature networks are exported truncated after their deepest requested layer,
with one output per layer, named after it, so `session.run(None, ...)` returns
exactly the features a caller asked for.  Every file passes `onnx.checker`
before it is moved into place.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import EngineError
from .files import atomic_write
from .networks import FeatureNet

INPUT_NAME = "image"
OPSET = 17


class LayerOutputs(nn.Module):
    """A FeatureNet with a fixed layer list and positional outputs, as ONNX export needs."""

    def __init__(self, net: FeatureNet, layers: tuple[str, ...]):
        super().__init__()
        self.net = net
        self.layers = layers

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.net(image, self.layers)
        return tuple(features[name] for name in self.layers)


def export_module(module: nn.Module, example: torch.Tensor, path: str | os.PathLike, output_names: list[str]) -> Path:
    """Export `module` (one NCHW image in, tensors out) with dynamic batch, height and width.

    The file is written beside `path` first, checked, then renamed, so a failed
    export never leaves a half-written model that a later run would trust.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise EngineError(f"output folder does not exist: {path.parent}")
    dynamic = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in output_names}
    dynamic[INPUT_NAME] = {0: "batch", 2: "height", 3: "width"}
    with atomic_write(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # onnxscript (needed by the dynamo exporter) is not a dependency; the TorchScript
            # exporter handles these plain conv nets and warns only that it is the old path.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module.eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=dynamic,
            )
        check(tmp)
    return path


def export_features(net: FeatureNet, layers: tuple[str, ...], path: str | os.PathLike) -> Path:
    """Write `net` truncated after the deepest of `layers`; outputs are named after the layers."""
    if not layers:
        raise EngineError("name at least one layer to export")
    layers = tuple(dict.fromkeys(layers))  # unique, in the order given
    for name in layers:
        net.layer_index(name)
    example = torch.rand(1, 3, 64, 64, device=next(net.parameters()).device)
    return export_module(LayerOutputs(net, layers), example, path, list(layers))


def check(path: str | os.PathLike) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineError(f"exported model {path} fails onnx.checker: {str(exc).splitlines()[0]}") from None


COREML = "CoreMLExecutionProvider"
# CoreML as an ML Program on the CPU and GPU, in float32: the Neural Engine and the older NeuralNetwork format
# compute in float16, too coarse for Gram matrices of deep features.
PROVIDER_OPTIONS = {COREML: {"ModelFormat": "MLProgram", "MLComputeUnits": "CPUAndGPU"}}


@functools.lru_cache(maxsize=1)
def cuda_works() -> bool:
    """True when onnxruntime lists CUDA *and* a session actually gets it.

    The -gpu wheel always lists CUDAExecutionProvider, even without the CUDA
    libraries it needs, so a one-node probe session settles it (silently).
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", value[:1], value[1:])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)  # the failed CUDA load logs an error through the default logger
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        return session.get_providers()[0] == "CUDAExecutionProvider"
    except Exception:  # noqa: BLE001 - any failure here just means "no CUDA"
        return False
    finally:
        ort.set_default_logger_severity(2)


def providers(device: str = "auto") -> list[str]:
    """Execution providers for an engine device name ("auto", "cpu", "cuda", "mps"), from what the installed
    onnxruntime offers: CUDA (onnxruntime-gpu on Linux and Windows, when it works), CoreML (plain onnxruntime
    on macOS, for "auto" and "mps"), and always the CPU last."""
    import onnxruntime as ort

    if device == "cuda" and not cuda_works():
        raise EngineError(
            "onnxruntime cannot use CUDA here (onnxruntime-gpu needs the CUDA and cuDNN 9 libraries); use device 'cpu'"
        )
    if device in ("auto", "cuda") and cuda_works():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device in ("auto", "mps") and COREML in ort.get_available_providers():
        return [COREML, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: str | os.PathLike, device: str = "auto", arena: bool = False):
    """An onnxruntime session for `path`, reused while the file is unchanged.

    `arena` keeps onnxruntime's CPU memory arena: ~10% faster when every call
    has the same size (frames of a sequence), but it holds on to the largest
    call's memory, so feature extraction over changing sizes leaves it off.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise EngineError(f"ONNX model not found: {path}")
    stat = path.stat()
    return _session(str(path), stat.st_size, stat.st_mtime_ns, tuple(providers(device)), arena)


@functools.lru_cache(maxsize=4)
def _session(path: str, size: int, mtime_ns: int, chosen: tuple[str, ...], arena: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    try:
        return ort.InferenceSession(path, options, providers=[(name, PROVIDER_OPTIONS.get(name, {})) for name in chosen])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        if COREML in chosen:  # a graph CoreML cannot compile still runs on the CPU
            return _session(path, size, mtime_ns, ("CPUExecutionProvider",), arena)
        raise EngineError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None


def run(sess, image: np.ndarray) -> list[np.ndarray]:
    """Run a single-input session on an NCHW float32 batch."""
    return sess.run(None, {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)})
