"""`neural-style train-fast` and `apply-fast`: fast mode (engine/fast/) on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EngineError
from ..fast.options import WIDTHS, FastOptions
from .common import SAMPLES, add_quiet, add_style_arguments, options_from_args, progress_bar

# The StyleOptions that shape training (the rest are about optimising one image).
TRAINING_FIELDS = ("model", "weights", "pooling", "content_layers", "style_layers", "style_layer_weights",
                   "content_weight", "style_weight", "tv_weight", "style_scale", "seed", "device", "cache_dir")


def register(sub) -> None:
    p = sub.add_parser("train-fast", help="train a fast-mode network for one style (reuses a model trained before)")
    p.add_argument("style", nargs="?", help="style image (default: bundled sample)")
    _add_training_arguments(p)
    p.add_argument("-o", "--model-dir", default=".", help="folder for the model files (default: here)")
    p.set_defaults(func=run_train)

    p = sub.add_parser("apply-fast", help="stylize images or frame folders with a fast-mode network",
                       description="Give --model, or --style to train (or reuse) a model in the output folder first.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of frames")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or existing folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", dest="fast_model", help="a trained fast-*.onnx (or its .pt/.json)")
    source.add_argument("--style", help="style image: train or reuse a model next to the output")
    p.add_argument("--size", type=int, help="output longest side in pixels (default: each input's)")
    _add_training_arguments(p)
    p.set_defaults(func=run_apply)


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """FastOptions, plus the StyleOptions that shape training."""
    f = FastOptions()
    g = p.add_argument_group("training")
    g.add_argument("--frames", nargs="*", default=[],
                   help="content frames (files or folders); the bundled samples are always added")
    g.add_argument("--steps", type=int, default=f.steps)
    g.add_argument("--crop", type=int, default=f.crop, help="training crop side in pixels")
    g.add_argument("--batch-size", type=int, default=f.batch_size)
    g.add_argument("--width", choices=tuple(WIDTHS), default=f.width, help="network width (small is ~4x faster)")
    g.add_argument("--lr", type=float, default=f.learning_rate)
    g.add_argument("--retrain", action="store_true", help="train even if a matching model exists")
    add_style_arguments(g, TRAINING_FIELDS, model={"flags": ("--loss-network",), "help": "network the losses use"},
                        style_scale={"help": "style size relative to the crop"})
    add_quiet(g)


def _train(args: argparse.Namespace, model_dir: Path, style_path: str, frames: list[Path]) -> Path:
    from ..fast.training import train
    from ..images import read_image

    fast = FastOptions(steps=args.steps, crop=args.crop, batch_size=args.batch_size, width=args.width,
                       learning_rate=args.lr)
    with progress_bar(args.quiet, unit="step", losses=("total",)) as progress:
        return train(frames, read_image(style_path), options_from_args(args), fast, model_dir,
                     progress=progress, retrain=args.retrain)


def run_train(args: argparse.Namespace) -> int:
    from ..files import frames_in

    path = _train(args, Path(args.model_dir), args.style or str(SAMPLES / "style.png"), frames_in(args.frames))
    print(f"model ready: {path}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from ..fast.inference import apply, apply_sequence
    from ..files import frames_in
    from ..images import check_output, check_output_folder, read_image, write_image

    inputs = frames_in(args.inputs)
    if not inputs:
        raise EngineError("no input images found")
    output = Path(args.output)
    single = len(inputs) == 1 and not output.is_dir()
    if single:  # the output is checked before any work
        check_output(output, protect=tuple(inputs))
    else:
        check_output_folder(output)
    # Trained on the frames it is about to stylize unless --frames names others.
    model = args.fast_model or _train(args, output.parent if single else output, args.style, frames_in(args.frames) or inputs)
    if single:
        write_image(output, apply(model, read_image(inputs[0]), args.device, args.size), protect=tuple(inputs))
        print(f"wrote {output}")
        return 0
    with progress_bar(args.quiet, unit="frame") as progress:
        written = apply_sequence(model, inputs, output, args.device, args.size, progress=progress)
    print(f"wrote {len(written)} frames to {output}")
    return 0
