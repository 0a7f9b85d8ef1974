"""`neural-style train-fast` and `apply-fast`: fast mode (engine/fast/) on the command line.

They follow `stylize`: the same names for the same things (`--model` is the loss network, `--size` the output's
longest side, `-o/--output` where results go, created when missing, `--iterations/-n` the training steps,
`--learning-rate`), the same tqdm progress with the style and content losses, and `--json` for a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EngineError
from ..fast.options import SEQUENCE_BLEND, WIDTHS, FastOptions
from ..temporal import FLOWS, TemporalOptions
from .common import SAMPLES, add_quiet, add_style_arguments, options_from_args, progress_bar

# The StyleOptions that shape training (the rest are about optimising one image).
TRAINING_FIELDS = ("model", "weights", "pooling", "content_layers", "style_layers", "style_layer_weights",
                   "content_weight", "style_weight", "tv_weight", "style_scale", "seed", "device", "cache_dir")
_SIZE_HELP = "output longest side in pixels (default: each input's); the model is trained for this size"


def register(sub) -> None:
    p = sub.add_parser(
        "train-fast", help="train a fast-mode network for one style (reuses a model trained before)",
        description="Train a feed-forward network for STYLE on the frames it will stylize (--frames) plus the "
                    "bundled samples; a model trained before with the same style and settings is reused.")
    p.add_argument("style", nargs="?", help="style image (default: bundled sample)")
    p.add_argument("-o", "--output", "--model-dir", dest="output", default=".",
                   help="folder for the model files (default: here; created when missing)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    add_quiet(p)
    _add_training_arguments(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "apply-fast", help="stylize images or frame folders with a fast-mode network",
        description="Give --fast-model, or --style to train (or reuse) a model next to the output first.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of frames (in natural name order)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (one input and an image name) or folder (created when missing)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fast-model", help="a trained fast-*.onnx (or its .pt/.json)")
    source.add_argument("--style", help="style image: train or reuse a model next to the output")
    p.add_argument("--blend", type=float, default=SEQUENCE_BLEND,
                   help="temporal coherence of a frame sequence: the share of the previous result, moved along the "
                        "motion, mixed into pixels whose content did not change, 0-1 (0: frames independent)")
    p.add_argument("--flow", choices=FLOWS, default="auto",
                   help="motion source: auto (Blender's Vector pass in multilayer EXR frames, else OpenCV DIS optical "
                        "flow), vectors, opencv")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    add_quiet(p)
    _add_training_arguments(p)
    p.set_defaults(func=run_apply)


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """FastOptions, plus the StyleOptions that shape training, under stylize's names."""
    f = FastOptions()
    g = p.add_argument_group("training (apply-fast: with --style)")
    g.add_argument("--frames", nargs="*", default=[],
                   help="content frames to train on (files or folders; apply-fast: default its inputs); the bundled "
                        "samples are always added")
    g.add_argument("--size", type=int, help=_SIZE_HELP)
    g.add_argument("--iterations", "-n", "--steps", dest="steps", type=int, default=f.steps, help="training steps")
    g.add_argument("--crop", type=int, default=f.crop, help="training crop side in pixels")
    g.add_argument("--batch-size", type=int, default=f.batch_size)
    g.add_argument("--width", choices=tuple(WIDTHS), default=f.width, help="network width")
    g.add_argument("--residual-blocks", type=int, default=f.residual_blocks)
    g.add_argument("--learning-rate", "--lr", dest="lr", type=float, default=f.learning_rate)
    g.add_argument("--retrain", action="store_true", help="train even if a matching model exists")
    add_style_arguments(g, TRAINING_FIELDS, model={"help": "network the losses use (as in stylize)"},
                        style_scale={"help": "style size relative to the output's (as in stylize)"})


def fast_from_args(args: argparse.Namespace) -> FastOptions:
    return FastOptions(steps=args.steps, crop=args.crop, batch_size=args.batch_size, width=args.width,
                       residual_blocks=args.residual_blocks, learning_rate=args.lr)


def _train(args: argparse.Namespace, model_dir: Path, style_path: str | Path, frames: list[Path]) -> tuple[Path, dict]:
    """Train (or reuse) with tqdm progress like stylize's; returns the model and its summary."""
    from ..fast.training import train
    from ..images import read_image
    from ..weights import describe

    options = options_from_args(args)
    fast = fast_from_args(args)
    quiet = args.quiet or args.json
    if not quiet:
        print(f"weights: {describe(options.model, options.weights)}", file=sys.stderr)
    model_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = []
    with progress_bar(quiet, unit="step", losses=("style", "content")) as bar:

        def report(p) -> None:
            steps[:] = [p.iteration]
            bar(p)

        model = train(frames, read_image(style_path), options, fast, model_dir, progress=report, retrain=args.retrain)
    summary = {"model": str(model), "style": str(style_path), "trained": bool(steps), "steps": steps[0] if steps else 0,
               "seconds": round(time.perf_counter() - start, 3), "fast": fast.to_dict(), "options": options.to_dict()}
    return model, summary


def run_train(args: argparse.Namespace) -> int:
    from ..files import frames_in
    from ..images import check_output_folder

    check_output_folder(args.output)
    model, summary = _train(args, Path(args.output), args.style or SAMPLES / "style.png", frames_in(args.frames))
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        done = f"trained in {summary['seconds']:.1f} s" if summary["trained"] else "reused (trained before)"
        print(f"model ready: {model} ({done})")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from ..fast.inference import apply, apply_sequence
    from ..files import IMAGE_SUFFIXES, frames_in
    from ..images import check_output, check_output_folder, read_image, write_image

    inputs = frames_in(args.inputs)
    if not inputs:
        raise EngineError("no input images found")
    output = Path(args.output)
    single = output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir()
    if single and len(inputs) > 1:
        raise EngineError(f"{len(inputs)} inputs need an output folder, not the image {output}")
    if not 0 <= args.blend <= 1:
        raise EngineError(f"--blend must be between 0 and 1, got {args.blend}")
    folder = output.parent if single else output
    check_output_folder(folder)  # before any work
    folder.mkdir(parents=True, exist_ok=True)
    if single:
        check_output(output, protect=tuple(inputs))
    summary = {}
    model = args.fast_model
    if model is None:  # trained on the frames it is about to stylize unless --frames names others
        model, summary = _train(args, folder, args.style, frames_in(args.frames) or inputs)
    quiet = args.quiet or args.json
    start = time.perf_counter()
    if single:
        result = apply(model, read_image(inputs[0]), args.device, args.size)
        written = [write_image(output, result, protect=tuple(inputs))]
    else:
        temporal = TemporalOptions(enabled=args.blend > 0, flow=args.flow, blend=args.blend)
        with progress_bar(quiet, unit="frame") as progress:
            written = apply_sequence(model, inputs, output, args.device, args.size, progress, temporal=temporal)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"outputs": [str(p) for p in written], "model": str(model), "seconds": round(seconds, 3),
                          **({"training": summary} if summary else {})}))
    elif not args.quiet:
        where = written[0] if single else f"{len(written)} frames to {output}"
        print(f"wrote {where} in {seconds:.1f} s")
    return 0

