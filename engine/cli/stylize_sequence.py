"""`neural-style stylize-sequence`: a folder of frames with temporal coherence (engine/temporal.py)."""

from __future__ import annotations

import argparse
import time

from ..distributed import ClusterOptions
from ..errors import EngineError
from ..temporal import FLOWS, TemporalOptions
from .common import (MASK_HELP, add_quiet, add_ray_token, add_style_arguments, mask_specs, options_from_args,
                     progress_bar)


def register(sub) -> None:
    d = TemporalOptions()
    p = sub.add_parser(
        "stylize-sequence", help="stylize an image sequence with temporal coherence",
        description="Stylize every image of FRAMES (a folder, natural name order) into OUTPUT, tying each frame "
                    "to the previous one along Blender's motion vectors or optical flow.",
    )
    p.add_argument("frames", help="folder of frames: images, or Blender multilayer EXRs with a Vector pass")
    p.add_argument("style", nargs="+", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--vectors", help="folder of multilayer EXRs with the Vector pass, one per frame, same order")
    p.add_argument("--flow", choices=(*FLOWS, "none"), default=d.flow,
                   help="motion source: auto (vectors when present, else OpenCV DIS), vectors, opencv, "
                        "none (no temporal coherence)")
    p.add_argument("--mask", action="append", metavar="MASK",
                   help=f"{MASK_HELP}; for a shot also a folder of one mask per frame, and Cryptomatte masks come "
                        "from each frame's render (--mattes)")
    p.add_argument("--mattes", metavar="FOLDER",
                   help="Blender multilayer EXRs with the Cryptomatte passes, one per frame, same order (default: "
                        "the --vectors EXRs, or the frames themselves when they are multilayer EXRs)")
    add_temporal_arguments(p)
    add_cluster_arguments(p)
    p.add_argument("--format", choices=("png", "tif", "exr", "jpg"), default="png",
                   help="exr keeps HDR highlights above 1 (EXR frames in, EXR out)")
    add_quiet(p)
    add_style_arguments(p.add_argument_group("style options"))
    p.set_defaults(func=run)


def add_temporal_arguments(parser) -> None:
    """The TemporalOptions strengths (the benchmark in benchmarks/bench_temporal.py takes them too)."""
    d = TemporalOptions()
    parser.add_argument("--temporal-weight", type=float, default=d.weight)
    parser.add_argument("--blend", type=float, default=d.blend, help="mix of the warped previous frame into the result, 0-1")
    # What counts as unchanged (engine/trust.py)
    parser.add_argument("--tolerance", type=float, default=d.tolerance,
                        help="CIELAB colour change beyond which a pixel is re-stylized instead of kept (0 = off)")
    parser.add_argument("--feather", type=float, default=d.feather,
                        help="pixels over which kept regions fade into re-stylized ones")


def add_cluster_arguments(parser) -> None:
    """Distribution over a Ray cluster (engine/distributed.py)."""
    d = ClusterOptions()
    g = parser.add_argument_group("distribution (Ray)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="spread the frames over a Ray cluster: no value starts Ray on this machine, 'auto' joins "
                        "this machine's cluster, HOST:PORT joins that head node; frames go to shared storage")
    add_ray_token(g)
    g.add_argument("--chunk", type=int, default=d.chunk, help="frames per task with temporal coherence")
    g.add_argument("--overlap", type=int, default=d.overlap, help="frames cross-faded between neighbouring chunks")
    g.add_argument("--retries", type=int, default=d.retries, help="reruns of a task whose node died")
    g.add_argument("--gpus-per-task", type=float, default=d.gpus, help="GPUs each task asks Ray for (0 = CPU)")
    g.add_argument("--fast", action="store_true",
                   help="fast mode with --ray: train one feed-forward network, then apply it to the frames in parallel")


def run(args: argparse.Namespace) -> int:
    from ..files import list_frames
    from ..images import check_output_folder, read_image
    from ..temporal import stylize_sequence

    check_output_folder(args.output)  # before any work
    if args.fast and args.ray is None:
        raise EngineError("--fast is for --ray runs; on one machine use train-fast and apply-fast")
    cluster = ClusterOptions(args.ray, args.chunk, args.overlap, args.retries, args.gpus_per_task, args.ray_token)
    frames = list_frames(args.frames)
    vectors = list_frames(args.vectors) if args.vectors else None
    mattes = list_frames(args.mattes) if args.mattes else None
    regions = mask_specs(args.mask, len(args.style), shot=True)
    if regions is not None and args.fast:
        raise EngineError("--mask works with optimisation, not --fast")
    styles = [read_image(p, hdr=True) for p in args.style]
    options = options_from_args(args)
    temporal = TemporalOptions(
        enabled=args.flow != "none", weight=args.temporal_weight, flow="auto" if args.flow == "none" else args.flow,
        blend=args.blend, tolerance=args.tolerance, feather=args.feather,
    )
    start = time.perf_counter()
    if args.ray is not None:
        return _run_distributed(args, frames, vectors, styles, options, temporal, cluster, regions, mattes)
    with progress_bar(args.quiet) as progress:
        written = stylize_sequence(frames, styles, options, temporal, args.output, vectors, f".{args.format}", progress,
                                   regions=regions, mattes=mattes)
    if not args.quiet:
        print(f"wrote {len(written)} frames to {args.output} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_distributed(args, frames, vectors, styles, options, temporal, cluster, regions, mattes) -> int:
    from ..distributed import stylize_sequence
    from ..fast.options import FastOptions

    with progress_bar(args.quiet) as progress:
        result = stylize_sequence(
            frames, styles, options, temporal, args.output, cluster, vectors, f".{args.format}",
            FastOptions() if args.fast else None, progress, regions=regions, mattes=mattes,
        )
    if not args.quiet:
        print(f"{len(result.written)} frames written, {len(result.skipped)} already done, on {result.nodes} Ray "
              f"node(s) in {result.seconds:.1f} s")
    if result.failed:
        names = ", ".join(sorted(result.failed))
        raise EngineError(f"{len(result.failed)} frame(s) could not be made ({names}): {next(iter(result.failed.values()))}")
    return 0
