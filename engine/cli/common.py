"""What several subcommands share: the StyleOptions flags, comma-list parsers, the progress bar, error exits.

Argument parsing only at import time; torch loads when a command runs, so
`neural-style --help` stays quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import Cancelled, EngineError
from ..options import DEVICES, INITS, MODELS, OPTIMIZERS, POOLINGS, PRECISIONS, StyleOptions

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def names(text: str) -> tuple[str, ...]:
    """"relu1_1, relu2_1" -> ("relu1_1", "relu2_1"); blanks are skipped."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def floats(text: str) -> tuple[float, ...]:
    return _numbers(text, float, "numbers")


def ints(text: str) -> tuple[int, ...]:
    return _numbers(text, int, "integers")


def _numbers(text: str, kind: type, what: str) -> tuple:
    try:
        return tuple(kind(t) for t in names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None


def _style_flags() -> dict[str, tuple[tuple[str, ...], dict]]:
    """StyleOptions field -> (option strings, argparse keywords); the defaults are StyleOptions' own."""
    d = StyleOptions()
    return {
        "model": (("--model",), dict(choices=MODELS, default=d.model)),
        "weights": (("--weights",), dict(default=d.weights, help="packaged (offline VGG-16), download (official files), "
                                      "random (tests/benchmarks only) or a .pth/.onnx path")),
        "pooling": (("--pooling",), dict(choices=POOLINGS, default=d.pooling)),
        "content_layers": (("--content-layers",), dict(type=names, help="comma-separated, e.g. relu4_2")),
        "style_layers": (("--style-layers",), dict(type=names, help="comma-separated, e.g. relu1_1,relu2_1")),
        "style_layer_weights": (("--style-layer-weights",), dict(type=floats)),
        "content_weight": (("--content-weight",), dict(type=float, default=d.content_weight)),
        "style_weight": (("--style-weight",), dict(type=float, default=d.style_weight)),
        "tv_weight": (("--tv-weight",), dict(type=float, default=d.tv_weight)),
        "optimizer": (("--optimizer",), dict(choices=OPTIMIZERS, default=d.optimizer)),
        "iterations": (("--iterations", "-n"), dict(type=int, default=d.iterations,
                       help="most per scale (the convergence stop, --stop-change, may end a scale sooner)")),
        "stop_change": (("--stop-change",), dict(type=float, default=d.stop_change, metavar="PERCENT",
                        help="end a scale once the picture's look (its style statistics) changes by less than "
                             f"PERCENT per 10 iterations, twice in a row (default {d.stop_change}; 0: run every "
                             "--iterations)")),
        "learning_rate": (("--learning-rate",), dict(type=float)),
        "init": (("--init",), dict(choices=INITS, default=d.init)),
        "init_image": (("--init-image",), {}),
        "seed": (("--seed",), dict(type=int)),
        "size": (("--size",), dict(type=int, help="output longest side in pixels (default: the content's)")),
        "style_blend_weights": (("--style-blend-weights",), dict(type=floats)),
        "style_scale": (("--style-scale",), dict(type=float, default=d.style_scale)),
        "preserve_colors": (("--preserve-colors",), dict(action="store_true")),
        "scales": (("--scales",), dict(type=int, help="coarse-to-fine scales (default: by size)")),
        "device": (("--device",), dict(choices=DEVICES, default=d.device)),
        "precision": (("--precision",), dict(choices=PRECISIONS, default=d.precision,
                      help="the network's arithmetic; auto: bf16 on a CPU with bf16 arithmetic (AVX-512 BF16, AMX, "
                           "Arm BF16), fp32 elsewhere")),
        "tile_size": (("--tile-size",), dict(type=int, default=d.tile_size, help="0 = by free memory, -1 = never tile")),
        "seamless": (("--seamless",), dict(action="store_true", help="the result tiles: the image wraps around "
                     "(VGG models, never tiled; docs/material-textures.md)")),
        "cache_dir": (("--cache-dir",), dict(help="weights cache (default $NEURAL_STYLE_CACHE or ~/.cache/neural-style)")),
    }


def add_style_arguments(parser, fields: Iterable[str] | None = None, **changes: dict) -> None:
    """Add the StyleOptions flags (all, or the named `fields`) to a parser or argument group.

    `changes` maps a field to argparse keywords that replace its defaults;
    a "flags" key renames the option (its value still lands in the field).
    """
    table = _style_flags()
    for field in fields or table:
        flags, keywords = table[field]
        keywords = {**keywords, **changes.get(field, {})}
        parser.add_argument(*keywords.pop("flags", flags), dest=field, **keywords)


def options_from_args(args: argparse.Namespace) -> StyleOptions:
    """The StyleOptions named by a parsed command line (fields it has no flag for, or whose flag was not given
    and defaults to None, keep their defaults)."""
    given = {name: value for name, value in vars(args).items() if value is not None}
    return StyleOptions(**{f.name: given[f.name] for f in dataclasses.fields(StyleOptions) if f.name in given})


MASK_HELP = ("where the style of the same position applies: one per style image, in order: an image (white: "
             "styled; its alpha when it has one) or .npy array, object:NAME[,NAME...] or material:NAME[,...] "
             "(Cryptomatte coverage in the render), or 'rest' = every pixel no other mask covers; without a 'rest', "
             "pixels no mask covers stay as the content (docs/regions.md)")


def mask_specs(masks: list[str] | None, style_count: int, shot: bool = False) -> list[dict] | None:
    """--mask values, one per style, as engine.regions specs (None without masks).  `shot`: a folder is one
    mask per frame."""
    from ..files import list_frames
    from ..regions import REST

    if not masks:
        return None
    if len(masks) != style_count:
        raise EngineError(f"give one --mask per style image: {style_count} style(s), {len(masks)} mask(s)")
    specs = []
    for index, mask in enumerate(masks):
        kind, _, names_text = mask.partition(":")
        if mask == REST:
            where = REST
        elif kind in ("object", "material") and names_text:
            where = {kind: list(names(names_text))}
        elif shot and Path(mask).is_dir():
            where = {"files": [str(p) for p in list_frames(mask)]}
        else:
            where = {"file": mask}
        specs.append({"styles": [index], "mask": where})
    if REST not in masks:
        specs.append({"mask": REST})  # no styles: the pixels no mask covers stay as the content
    return specs


def mask_files(masks: list[str] | None) -> list[Path]:
    """The --mask values that name files (inputs no output may overwrite)."""
    return [Path(m) for m in masks or [] if Path(m).is_file()]


def add_ray_token(parser) -> None:
    """The cluster's token file, for the commands that take --ray (docs/distributed.md, "Tokens")."""
    parser.add_argument("--ray-token", metavar="FILE",
                        help="the Ray cluster's authentication token (default: $RAY_AUTH_TOKEN, the file named by "
                             "$RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)")


def add_quiet(parser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true")


@contextmanager
def progress_bar(quiet: bool, unit: str = "it", losses: tuple[str, ...] = ()) -> Iterator[Callable]:
    """A tqdm bar fed by `Progress` reports, showing the reported stage and the named `losses`.

    A report whose iteration is below the bar's count starts the bar over
    (the next run of a benchmark that makes several).  The bar appears with
    the first report, so a command that fails before any work prints only its
    error line.
    """
    from tqdm import tqdm

    bars = []

    def report(p) -> None:
        if not bars:
            bars.append(tqdm(total=None, unit=unit, disable=quiet, dynamic_ncols=True))
        bar = bars[0]
        if p.iteration < bar.n:
            bar.reset()
        bar.total = p.total
        bar.set_description(p.stage, refresh=False)
        postfix = {name: f"{p.losses[name]:.3g}" for name in losses if name in p.losses}
        if p.saved:  # the convergence stop ended a scale early: what it saved
            postfix["saved"] = f"{p.saved} it ~{p.saved_seconds:.0f}s"
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.update(p.iteration - bar.n)

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str = "neural-style") -> int:
    """Run one parsed command: every user error ends as one line on stderr and exit status 2; no traceback."""
    try:
        return func(args)
    except EngineError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print(f"{prog}: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
