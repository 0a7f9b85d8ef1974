"""Quality per iteration: the image's parametrisation and the Gram products' precision (issue 24's levers).

    python -m benchmarks.parametrisation [--pairs forest-strokes,city-mosaic] [--size 256] [--steps 300]
        [--checkpoints 100,200,300] [--levels 4] [--decays 0.5,0.7] [--json docs/bench/parametrisation.json]

A documented experiment, not a test.  Every variant runs the engine's step on a held-out pair
(`benchmarks/held_out.py`): packaged VGG-16 with the default layers and weights, the run's
precision (`auto`: bf16 on a CPU with bf16 arithmetic), L-BFGS with history 50 and no line search,
the restart of `engine.optimize` (`Best`, `RESTART_JUMP`), the image clamped to [0, 1] after each
step, the convergence stop off.  At each checkpoint the picture is judged by `benchmarks/judge.py`.

- `pixel`: the image is the parameter, as in `engine.optimize.optimize_image` (the loop below gives
  its result to the last bit; tests/test_bench.py checks it);
- `pyramid L/d`: the image is the content plus a pyramid of L offsets, level k (1/2^k of the size,
  upsampled bilinearly) weighted by d^k, all starting at zero; L-BFGS optimises the offsets, so a
  step moves coarse structure as readily as single pixels (the Fourier/pyramid preconditioning of
  feature visualisation).  The clamp is projected into level 0;
- `bf16-grams`: the pixel variant with the style layers' Gram products in the network's bf16
  (the engine keeps them in fp32, `engine.losses.gram`).

Prints a table (objective at each checkpoint, seconds per iteration) and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_JSON = Path(__file__).resolve().parents[1] / "docs" / "bench" / "parametrisation.json"


class Pyramid:
    """image = content + sum_k decay^k * upsample(z_k), z one flat parameter holding every level."""

    def __init__(self, content: torch.Tensor, levels: int, decay: float):
        self.content, self.decay = content, decay
        h, w = content.shape[-2:]
        self.shapes = [(1, 3, max(1, h >> k), max(1, w >> k)) for k in range(levels)]
        self.z = torch.zeros(sum(s[2] * s[3] * 3 for s in self.shapes), requires_grad=True)

    def levels(self, z: torch.Tensor) -> list[torch.Tensor]:
        out, at = [], 0
        for shape in self.shapes:
            n = shape[1] * shape[2] * shape[3]
            out.append(z[at:at + n].view(shape))
            at += n
        return out

    def image(self) -> torch.Tensor:
        size = self.content.shape[-2:]
        x = self.content
        for k, level in enumerate(self.levels(self.z)):
            x = x + (level if k == 0 else self.decay ** k * F.interpolate(level, size=size, mode="bilinear",
                                                                            align_corners=False))
        return x

    def project(self) -> None:
        """Clamp the picture to [0, 1] by moving level 0 alone."""
        with torch.no_grad():
            x = self.image()
            self.levels(self.z)[0].add_(x.clamp(0, 1) - x)


class PixelImage:
    """The engine's parametrisation: the image is the parameter."""

    def __init__(self, content: torch.Tensor):
        self.z = content.detach().clone().requires_grad_(True)

    def image(self) -> torch.Tensor:
        return self.z

    def project(self) -> None:
        with torch.no_grad():
            self.z.clamp_(0, 1)


@contextlib.contextmanager
def bf16_grams():
    """Within: `engine.losses.gram` multiplies reduced-precision features in their own precision."""
    from engine import losses

    original = losses.gram

    def gram(features: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        flat = features.reshape(b, c, h * w)
        if flat.dtype not in (torch.bfloat16, torch.float16):
            flat = flat.float()
        return losses.channel_products(flat).float() / (c * h * w)

    losses.gram = gram
    try:
        yield
    finally:
        losses.gram = original


def optimise(net, targets, options, layer_weights, param, steps: int, autocast, on_step=None) -> torch.Tensor:
    """`engine.optimize.optimize_image`'s loop (stop off) over `param`'s parameter; returns the picture
    (clamped: the pyramid's projection leaves it within rounding of [0, 1])."""
    from engine import losses
    from engine.optimize import Best

    layers = tuple(dict.fromkeys((*targets.content, *layer_weights)))

    def new_optimizer():
        return torch.optim.LBFGS([param.z], lr=1.0, max_iter=1, history_size=50)

    optimizer, best, seen = new_optimizer(), Best(param.z), {}

    def closure():
        optimizer.zero_grad(set_to_none=True)
        image = param.image()
        with autocast():
            feats = net(image, layers)
        total = (options.content_weight * losses.content_loss(feats, targets.content)
                 + options.style_weight * targets.style_loss(feats, layer_weights)
                 + options.tv_weight * losses.tv_loss(image))
        seen["total"] = float(total.detach())
        best.see(seen["total"], param.z)
        total.backward()
        return total

    for done in range(1, steps + 1):
        optimizer.step(closure)
        param.project()
        if best.jumped(seen["total"]):
            best.restore(param.z)
            optimizer = new_optimizer()
        if on_step is not None:
            on_step(done, param)
    return param.image().detach().clamp(0, 1)


def run_pair(name: str, size: int, steps: int, checkpoints: list[int], variants: list[str]) -> dict:
    from benchmarks.held_out import pair
    from benchmarks.judge import Judge
    from engine.model import prepare_network
    from engine.optimize import Targets
    from engine.options import StyleOptions
    from engine.targets import content_targets, style_at, style_grams
    from engine.tensors import autocast_factory, resolve_precision, to_array, to_tensor

    content, style = pair(name, size)
    content = content[..., :3]
    options = StyleOptions(stop_change=0)
    net, plan, device = prepare_network(options)
    autocast = autocast_factory(device, options.precision)
    h, w = content.shape[:2]
    content_t = to_tensor(content, device)
    targets = Targets(content_targets(net, content_t, plan.content, autocast),
                      style_grams(net, [to_tensor(style_at(style, h, w, 1.0), device)], [1.0], plan.style, autocast))
    judge = Judge(content, style)
    result = {"pair": name, "height": h, "width": w, "precision": resolve_precision(device, options.precision),
              "variants": {}}
    for variant in variants:
        marks: dict[int, float] = {}

        def on_step(done, param):
            if done in checkpoints:
                with torch.no_grad():
                    marks[done] = judge(to_array(param.image().detach()))["objective"]

        context = bf16_grams() if variant == "bf16-grams" else contextlib.nullcontext()
        param = _param(variant, content_t)
        start = time.perf_counter()
        with context:
            optimise(net, targets, options, plan.weights, param, steps, autocast, on_step)
        seconds = time.perf_counter() - start
        result["variants"][variant] = {"objective": marks, "seconds": round(seconds, 2),
                                       "seconds_per_iteration": round(seconds / steps, 4)}
    return result


def _param(variant: str, content: torch.Tensor):
    if variant.startswith("pyramid"):
        levels, decay = variant.split(" ", 1)[1].split("/")
        return Pyramid(content, int(levels), float(decay))
    return PixelImage(content)


def table(results: list[dict], checkpoints: list[int]) -> str:
    head = "| pair | variant | " + " | ".join(f"objective at {c}" for c in checkpoints) + " | s / iteration |"
    rows = [head, "|" + " --- |" * 2 + " ---: |" * (len(checkpoints) + 1)]
    for r in results:
        for variant, v in r["variants"].items():
            marks = " | ".join(f"{v['objective'].get(c, float('nan')):.4f}" for c in checkpoints)
            rows.append(f"| {r['pair']} | {variant} | {marks} | {v['seconds_per_iteration']:.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", default="forest-strokes,city-mosaic")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoints", default="100,200,300")
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--decays", default="0.5,0.7")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    from benchmarks.held_out import PAIRS

    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    unknown = sorted(set(args.pairs.split(",")) - set(PAIRS))
    if unknown:
        p.error(f"unknown pair {', '.join(unknown)}: the held-out pairs are {', '.join(PAIRS)}")
    if args.levels < 2 or checkpoints[0] < 1 or checkpoints[-1] > args.steps:
        p.error("--levels needs at least 2 and the checkpoints must lie in 1..--steps")
    variants = ["pixel", *(f"pyramid {args.levels}/{d}" for d in args.decays.split(",")), "bf16-grams"]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results = [run_pair(name, args.size, args.steps, checkpoints, variants) for name in args.pairs.split(",")]
    print(table(results, checkpoints))
    from engine.tensors import cpu_name

    report = {"machine": {"cpu": cpu_name(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
              "started": started, "settings": vars(args) | {"json": str(args.json)}, "pairs": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
