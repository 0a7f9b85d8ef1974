"""`neural-style export-onnx`: a truncated feature network as ONNX, for onnxruntime hosts."""

from __future__ import annotations

import argparse

from .common import add_style_arguments, names


def register(sub) -> None:
    p = sub.add_parser("export-onnx", help="export a truncated feature network to ONNX (dynamic height/width)")
    add_style_arguments(p, ("model", "weights", "pooling"))
    p.add_argument("--layers", type=names,
                   help="comma-separated outputs (default: the model's content and style layers)")
    add_style_arguments(p, ("seed", "cache_dir"), seed={"help": "for --weights random"})
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..onnx_export import export_features
    from ..weights import load_network

    net = load_network(args.model, args.weights, args.pooling, args.cache_dir, args.seed or 0)
    layers = args.layers or tuple(dict.fromkeys(net.spec.content_layers + net.spec.style_layers))
    path = export_features(net, layers, args.output)
    print(f"wrote {path} (outputs: {', '.join(layers)}; input 'image' Nx3xHxW RGB in [0, 1])")
    return 0
