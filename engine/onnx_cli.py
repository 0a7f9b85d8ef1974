"""`neural-style export-onnx`, `train-fast`, `apply-fast` and `bench-onnx`: the ONNX features on the command line.

Argument parsing only; torch loads when a command runs, so `neural-style --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli import SAMPLES, _floats, _names, options_from_args
from .errors import EngineError
from .fast_options import WIDTHS, FastOptions
from .options import DEVICES, MODELS, POOLINGS, StyleOptions


def register(sub) -> None:
    p = sub.add_parser("export-onnx", help="export a truncated feature network to ONNX (dynamic height/width)")
    p.add_argument("--model", choices=MODELS, default="vgg16")
    p.add_argument("--weights", default="packaged", help="packaged, download, random (tests only) or a file path")
    p.add_argument("--pooling", choices=POOLINGS, default="max")
    p.add_argument("--layers", type=_names,
                   help="comma-separated outputs (default: the model's content and style layers)")
    p.add_argument("--seed", type=int, help="for --weights random")
    p.add_argument("--cache-dir")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train-fast", help="train a fast-mode network for one style (reuses a model trained before)")
    p.add_argument("style", nargs="?", help="style image (default: bundled sample)")
    _add_training_arguments(p)
    p.add_argument("-o", "--model-dir", default=".", help="folder for the model files (default: here)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("apply-fast", help="stylize images or frame folders with a fast-mode network",
                       description="Give --model, or --style to train (or reuse) a model in the output folder first.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of frames")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or existing folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", dest="fast_model", help="a trained fast-*.onnx (or its .pt/.json)")
    source.add_argument("--style", help="style image: train or reuse a model next to the output")
    p.add_argument("--size", type=int, help="output longest side in pixels (default: each input's)")
    _add_training_arguments(p)
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("bench-onnx", help="benchmark onnxruntime vs torch features and fast-mode frames/s")
    p.add_argument("--feature-sizes", type=_ints, default=[256, 512])
    p.add_argument("--widths", type=_names, default=("default", "small"))
    p.add_argument("--weights", default="packaged", help="feature-network weights (speed is the same for random)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--training", action="store_true", help="also time fast-mode training steps (slow on a CPU)")
    p.add_argument("--json-out", default="docs/bench-onnx.json")
    p.set_defaults(func=_cmd_bench)


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The StyleOptions that shape training, plus FastOptions."""
    d, f = StyleOptions(), FastOptions()
    g = p.add_argument_group("training")
    g.add_argument("--frames", nargs="*", default=[],
                   help="content frames (files or folders); the bundled samples are always added")
    g.add_argument("--steps", type=int, default=f.steps)
    g.add_argument("--crop", type=int, default=f.crop, help="training crop side in pixels")
    g.add_argument("--batch-size", type=int, default=f.batch_size)
    g.add_argument("--width", choices=tuple(WIDTHS), default=f.width, help="network width (small is ~4x faster)")
    g.add_argument("--lr", type=float, default=f.learning_rate)
    g.add_argument("--retrain", action="store_true", help="train even if a matching model exists")
    g.add_argument("--loss-network", dest="model", choices=MODELS, default=d.model, help="network the losses use")
    g.add_argument("--weights", default=d.weights)
    g.add_argument("--pooling", choices=POOLINGS, default=d.pooling)
    g.add_argument("--content-layers", type=_names)
    g.add_argument("--style-layers", type=_names)
    g.add_argument("--style-layer-weights", type=_floats)
    g.add_argument("--content-weight", type=float, default=d.content_weight)
    g.add_argument("--style-weight", type=float, default=d.style_weight)
    g.add_argument("--tv-weight", type=float, default=d.tv_weight)
    g.add_argument("--style-scale", type=float, default=d.style_scale, help="style size relative to the crop")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=DEVICES, default=d.device)
    g.add_argument("--cache-dir")
    g.add_argument("--quiet", "-q", action="store_true")


def _cmd_export(args: argparse.Namespace) -> int:
    from .onnx_export import export_features
    from .weights import load_network

    net = load_network(args.model, args.weights, args.pooling, args.cache_dir, args.seed or 0)
    layers = args.layers or tuple(dict.fromkeys(net.spec.content_layers + net.spec.style_layers))
    path = export_features(net, layers, args.output)
    print(f"wrote {path} (outputs: {', '.join(layers)}; input 'image' Nx3xHxW RGB in [0, 1])")
    return 0


def _train(args: argparse.Namespace, model_dir: Path, style_path: str, frames: list[Path]) -> Path:
    from tqdm import tqdm

    from .fast import train
    from .images import read_image

    fast = FastOptions(steps=args.steps, crop=args.crop, batch_size=args.batch_size, width=args.width,
                       learning_rate=args.lr)
    bar = tqdm(total=fast.steps, unit="step", disable=args.quiet, dynamic_ncols=True, desc="training")

    def progress(p) -> None:
        bar.set_postfix(loss=f"{p.losses['total']:.3g}", refresh=False)
        bar.update(1)

    try:
        return train(frames, read_image(style_path), options_from_args(args), fast, model_dir,
                     progress=progress, retrain=args.retrain)
    finally:
        bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    from .fast import frames_in

    path = _train(args, Path(args.model_dir), args.style or str(SAMPLES / "style.png"), frames_in(args.frames))
    print(f"model ready: {path}")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .fast import apply, apply_sequence, frames_in
    from .images import read_image, write_image

    inputs = frames_in(args.inputs)
    if not inputs:
        raise EngineError("no input images found")
    output = Path(args.output)
    single = len(inputs) == 1 and not output.is_dir()
    # Trained on the frames it is about to stylize unless --frames names others.
    model = args.fast_model or _train(args, output.parent if single else output, args.style, frames_in(args.frames) or inputs)
    if single:
        write_image(output, apply(model, read_image(inputs[0]), args.device, args.size), protect=tuple(inputs))
        print(f"wrote {output}")
        return 0
    with tqdm(total=len(inputs), unit="frame", disable=args.quiet, dynamic_ncols=True) as bar:
        written = apply_sequence(model, inputs, output, args.device, args.size, progress=lambda p: bar.update(1))
    print(f"wrote {len(written)} frames to {output}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench_onnx import run

    if args.repeat < 1:
        raise EngineError("--repeat must be at least 1")
    result = run(args)
    print(f"{'test':48} {'backend':36} {'size':>10} {'best s':>8} {'median s':>9} {'best /s':>8}")
    for r in result["rows"]:
        print(f"{r['test']:48} {r['backend']:36} {r['size']:>10} {r['seconds_best']:8.3f} "
              f"{r['seconds_median']:9.3f} {r['per_second_best']:8.2f}")
    print(f"load average (start, end): {result['machine']['load_average_start_end']}")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_out}")
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
