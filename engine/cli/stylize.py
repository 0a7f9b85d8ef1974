"""`neural-style stylize`: one image, or the bundled samples when no image is named."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import (MASK_HELP, SAMPLES, add_quiet, add_ray_token, add_style_arguments, mask_files, mask_specs,
                     options_from_args, progress_bar)

# Where the no-argument demo writes: a folder git ignores and the extension build leaves out (README's two commands
# work in either order).
DEFAULT_OUTPUT = Path("out") / "stylized.png"
# The no-argument demo (the README's first command) at a size that finishes in under a minute on a 2-core CPU,
# with the default iterations: the convergence stop ends it when the look settles; --size / -n given win.
DEMO_SIZE = 256


def register(sub) -> None:
    p = sub.add_parser("stylize", help="stylize one image",
                       description="With no image arguments, stylizes the bundled sample images.")
    p.add_argument("content", nargs="?", help="content image (default: bundled sample)")
    p.add_argument("style", nargs="*", help="style image(s) (default: bundled sample)")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT),
                   help=f"output image (default: {DEFAULT_OUTPUT}, its folder created when missing)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG/TIFF bit depth")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="optimise the tiles of tiled scales on a Ray cluster (a large image; set --tile-size): no "
                        "value starts Ray here, 'auto' joins this machine's cluster, HOST:PORT joins that head node")
    add_ray_token(p)
    p.add_argument("--mask", action="append", metavar="MASK",
                   help=f"{MASK_HELP}; Cryptomatte masks need the content to be a Blender multilayer EXR with the pass")
    add_quiet(p)
    add_style_arguments(p.add_argument_group("style options"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..images import check_output, read_image, write_image
    from ..pipeline import stylize
    from ..weights import describe

    content_path = Path(args.content or SAMPLES / "content.png")
    style_paths = [Path(p) for p in (args.style or [SAMPLES / "style.png"])]
    output = Path(args.output)
    if output == DEFAULT_OUTPUT:
        output.parent.mkdir(exist_ok=True)
    inputs = [content_path, *style_paths, *mask_files(args.mask)] + ([Path(args.init_image)] if args.init_image else [])
    check_output(output, protect=inputs)
    specs = mask_specs(args.mask, len(style_paths))
    if args.content is None and not args.style:  # the demo
        args.size = DEMO_SIZE if args.size is None else args.size
    options = options_from_args(args)
    content = read_image(content_path, hdr=True)  # EXR/float TIFF highlights above 1 survive (engine/hdr.py)
    styles = [read_image(p, hdr=True) for p in style_paths]
    regions = None
    if specs is not None:
        from ..exr import is_multilayer
        from ..regions import resolve

        regions = resolve(specs, *content.shape[:2], mattes=content_path if is_multilayer(content_path) else None)
    if not (args.quiet or args.json):
        print(f"weights: {describe(options.model, options.weights)}", file=sys.stderr)

    start = time.perf_counter()
    last = []  # the final report: iterations run and saved (the convergence stop ended a scale sooner)
    with progress_bar(args.quiet or args.json, losses=("style", "content")) as progress:

        def report(p) -> None:
            last[:] = [p]
            progress(p)

        if args.ray is not None:
            from ..distributed import ClusterOptions, stylize_image

            result = stylize_image(content, styles, options, ClusterOptions(args.ray, token_file=args.ray_token), progress=report, regions=regions)
        else:
            result = stylize(content, styles, options, progress=report, regions=regions)
    elapsed = time.perf_counter() - start
    write_image(output, result, protect=inputs, bits=args.bits)
    summary = {
        "output": str(output),
        "content": str(content_path),
        "styles": [str(p) for p in style_paths],
        "width": result.shape[1],
        "height": result.shape[0],
        "seconds": round(elapsed, 3),
        "iterations": last[0].ran if last else 0,
        "saved_iterations": last[0].saved if last else 0,
        "losses": last[0].losses if last else {},
        "weights": describe(options.model, options.weights),
        "options": options.to_dict(),
    }
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(f"wrote {output} ({result.shape[1]}x{result.shape[0]}) in {elapsed:.1f} s")
    return 0
