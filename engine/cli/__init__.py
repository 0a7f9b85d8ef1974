"""`neural-style` command line: one module per subcommand, registered here in help order.

Every user error ends as one line on stderr and exit status 2; no traceback.
`neural-style bench` measures speed and memory on this machine's devices; the
development benchmarks are outside the engine package (`python -m benchmarks.bench`,
see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse

from . import devices, export_onnx, fast, fetch_weights, stylize, stylize_sequence
from .common import SAMPLES, run_command

# Each module adds its subcommand(s) through `register(subparsers)`.
COMMANDS = (stylize, fetch_weights, stylize_sequence, export_onnx, fast, devices)

__all__ = ["SAMPLES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-style", description="Neural style transfer (Gatys et al.)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
