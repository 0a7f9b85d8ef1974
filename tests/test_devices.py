"""Devices and precisions (issue 22, item 5): what "auto" picks, where fp16/bf16 are offered, `neural-style bench`,
and the engine on whatever accelerator this machine has (skipped, with the reason, where it has none)."""

import json

import numpy as np
import pytest
import torch

from engine import tensors
from engine.cli import main
from engine.errors import EngineError
from engine.memory import PeakMemory, free_memory
from engine.options import StyleOptions
from engine.pipeline import stylize
from engine.tensors import autocast_factory, pick_device, precision_problem, resolve_precision

TINY = StyleOptions(weights="random", seed=0, iterations=3, stop_change=0.0)


@pytest.mark.parametrize("cuda, mps, picked", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, picked):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(tensors, "_mps_available", lambda: mps)
    assert pick_device("auto").type == picked
    assert tensors.available_devices()[-1] == "cpu" and tensors.available_devices()[0] == picked


def test_a_missing_device_is_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tensors, "_mps_available", lambda: False)
    with pytest.raises(EngineError, match="no CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(EngineError, match="Metal is not available"):
        pick_device("mps")


def test_reduced_precision_is_offered_only_where_the_device_has_the_arithmetic(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert precision_problem(cpu, "fp32") is None and precision_problem(cuda, "fp32") is None
    assert "needs a GPU" in precision_problem(cpu, "fp16")
    monkeypatch.setattr(tensors, "cpu_has_bf16", lambda: False)
    assert "slower than fp32" in precision_problem(cpu, "bf16")
    monkeypatch.setattr(tensors, "cpu_has_bf16", lambda: True)
    assert precision_problem(cpu, "bf16") is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # Turing
    assert precision_problem(cuda, "fp16") is None
    assert "Ampere" in precision_problem(cuda, "bf16") and "7.5" in precision_problem(cuda, "bf16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert precision_problem(cuda, "bf16") is None
    monkeypatch.setattr(tensors, "_macos_at_least", lambda major: major <= 13)  # macOS 13
    assert precision_problem(mps, "fp16") is None and "macOS 14" in precision_problem(mps, "bf16")
    monkeypatch.setattr(tensors, "_macos_at_least", lambda major: True)
    assert precision_problem(mps, "bf16") is None
    with pytest.raises(EngineError, match="needs a GPU"):
        autocast_factory(cpu, "fp16")


def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_arithmetic(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(tensors, "cpu_has_bf16", lambda: True)
    assert [resolve_precision(d, "auto") for d in (cpu, cuda, mps)] == ["bf16", "fp32", "fp32"]
    assert resolve_precision(cpu, "fp32") == "fp32" and precision_problem(cpu, "auto") is None
    monkeypatch.setattr(tensors, "cpu_has_bf16", lambda: False)
    assert resolve_precision(cpu, "auto") == "fp32" and precision_problem(cpu, "auto") is None
    assert StyleOptions().precision == "auto"


def test_reduced_precision_runs_only_the_network_in_it(monkeypatch, content_small, style_small):
    """Under bf16 (CPU autocast, which this CPU emulates: allowed here only for the check) the features come out
    in bf16 while Grams, losses and the image stay fp32, and the picture stays near the fp32 one."""
    from engine import losses

    seen = []
    gram = losses.gram
    monkeypatch.setattr(losses, "gram", lambda f: seen.append((f.dtype, gram(f).dtype)) or gram(f))
    monkeypatch.setattr(tensors, "cpu_has_bf16", lambda: True)
    options = TINY.replace(iterations=2)
    reduced = stylize(content_small, [style_small], options.replace(precision="bf16"))
    assert (torch.bfloat16, torch.float32) in seen and all(g == torch.float32 for _, g in seen)
    full = stylize(content_small, [style_small], options.replace(precision="fp32"))
    assert reduced.dtype == np.float32 and np.isfinite(reduced).all()
    assert np.abs(reduced - full).mean() * 255 < 4  # a few 8-bit levels after 2 iterations


def test_neural_style_bench_gives_speed_and_memory_per_device_and_precision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--devices", "cpu", "--sizes", "32", "--iterations", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (cpu,) = report["devices"]
    assert cpu["device"] == "cpu" and cpu["budget_mb"] > 0 and cpu["largest_untiled_side"] >= 64
    fp32 = next(r for r in cpu["rows"] if r["precision"] == "fp32")
    assert fp32["size"] == 32 and fp32["it_per_min"] > 0 and fp32["peak_mb"] > 0 and fp32["planned_mb"] > 600
    fp16 = next(r for r in cpu["rows"] if r["precision"] == "fp16")
    assert "needs a GPU" in fp16["refused"]
    text = capsys.readouterr().out
    assert "untiled" in text and "refused" in text
    assert main(["bench", "--devices", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU here (torch.cuda.is_available() is False)")),
    pytest.param("mps", marks=pytest.mark.skipif(not tensors._mps_available(),
                                                 reason="no Apple GPU here (torch.backends.mps.is_available() is False)")),
]


@pytest.mark.parametrize("device", ACCELERATORS)
def test_the_engine_runs_on_the_accelerator_at_every_precision_it_offers(device, content_small, style_small):
    dev = torch.device(device)
    assert pick_device("auto").type == device  # an accelerator comes before the CPU
    assert free_memory(dev) > 0
    on_cpu = stylize(content_small, [style_small], TINY.replace(device="cpu"))
    memory = PeakMemory(dev)
    memory.reset()
    here = stylize(content_small, [style_small], TINY.replace(device=device), progress=lambda p: memory.sample())
    assert memory.peak() > memory.base
    assert np.abs(here - on_cpu).mean() * 255 < 2  # the same optimisation, other kernels
    for precision in ("fp16", "bf16"):
        if precision_problem(dev, precision):
            continue
        reduced = stylize(content_small, [style_small], TINY.replace(device=device, precision=precision))
        assert np.isfinite(reduced).all() and np.abs(reduced - here).mean() * 255 < 4, precision


@pytest.mark.parametrize("device", ACCELERATORS)
def test_tiled_runs_work_on_the_accelerator(device, content_small, style_small):
    tiled = stylize(content_small, [style_small], TINY.replace(device=device, tile_size=64, size=128))
    assert tiled.shape[:2] == (85, 128) and np.isfinite(tiled).all()
