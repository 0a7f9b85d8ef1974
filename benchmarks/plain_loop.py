"""The reference: a plain Gatys loop as the PyTorch neural-style tutorial writes it.

https://pytorch.org/tutorials/advanced/neural_style_tutorial.html, kept as close
to the tutorial as a fair comparison allows:

- the network is an `nn.Sequential` copied layer by layer from the feature network,
  with `ContentLoss`/`StyleLoss` modules inserted after the loss layers and
  everything after the last loss layer trimmed off (the tutorial's
  `get_style_model_and_losses`); ReLUs are out-of-place, as in the tutorial;
- `gram_matrix` is one `torch.mm` divided by a*b*c*d; losses are `F.mse_loss`;
- `torch.optim.LBFGS([input_img])` with its defaults (lr 1, max_iter 20,
  history 100), the closure clamps the image, runs the model, sums the losses,
  calls `backward()` and counts one iteration; the model and its weights have
  `requires_grad_(False)` and the image is initialised with the content image.

Two deliberate differences, both so the two loops compare like with like:

- the network and its weights are the engine's (`engine.weights.load_network`,
  VGG-16 from the packaged weights by default), truncated at the deepest of the
  engine's default layers for the model (VGG-16: content relu4_2, style
  relu1_1..relu5_1), and the tutorial's `Normalization` is the engine's input
  transform, so both loops run identical networks on identical inputs;
- targets are computed by the layers without the loss modules, so the style
  image need not have the content image's size (the tutorial squares both);
- the tutorial stops after the L-BFGS step in which the count passes
  `num_steps` (320 evaluations for 300); here the last step is shortened so
  exactly `num_steps` evaluations run.

Loss weights: the tutorial's (content 1, style 1e6) were tuned for torchvision
features, not these.  `engine_equivalent_weights` gives per-layer weights that
make this loop's objective equal the engine's content + style objective (the
engine's default weights with its relative losses), so "quality" compares two
optimisers of one objective; `TUTORIAL_WEIGHTS` is kept for reference.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

TUTORIAL_WEIGHTS = {"content": 1.0, "style": 1e6}


def gram_matrix(input: torch.Tensor) -> torch.Tensor:
    a, b, c, d = input.size()
    features = input.view(a * b, c * d)
    G = torch.mm(features, features.t())
    return G.div(a * b * c * d)


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor, weight: float = 1.0):
        super().__init__()
        self.target = target.detach()
        self.weight = weight
        self.loss = torch.zeros(())

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(input, self.target)
        return input


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor, weight: float = 1.0):
        super().__init__()
        self.target = gram_matrix(target_feature).detach()
        self.weight = weight
        self.loss = torch.zeros(())

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        G = gram_matrix(input)
        self.loss = F.mse_loss(G, self.target)
        return input


@dataclass
class PlainModel:
    model: nn.Sequential
    content_losses: list[ContentLoss] = field(default_factory=list)
    style_losses: list[StyleLoss] = field(default_factory=list)
    content_names: list[str] = field(default_factory=list)
    style_names: list[str] = field(default_factory=list)


def engine_network(model: str = "vgg16", weights: str = "packaged", cache_dir: str | None = None):
    """The engine's feature network and its default content/style layers for `model`."""
    from engine.networks import SPECS
    from engine.weights import load_network

    net = load_network(model, weights, "max", cache_dir, 0)
    spec = SPECS[model]
    return net, spec.content_layers, spec.style_layers


def build_model(net, content_layers, style_layers, style_img: torch.Tensor, content_img: torch.Tensor) -> PlainModel:
    """The tutorial's `get_style_model_and_losses` over the engine's network."""
    net = copy.deepcopy(net)
    plain = PlainModel(nn.Sequential(net.prep))
    trunk = nn.Sequential(net.prep)  # the layers so far without loss modules: style and content may differ in size
    for name, layer in zip(net.spec.layer_names, net.features):
        if isinstance(layer, nn.ReLU):
            layer = nn.ReLU(inplace=False)
        plain.model.add_module(name, layer)
        trunk.add_module(name, layer)
        if name in content_layers:
            target = trunk(content_img).detach()
            loss = ContentLoss(target)
            plain.model.add_module(f"content_loss_{name}", loss)
            plain.content_losses.append(loss)
            plain.content_names.append(name)
        if name in style_layers:
            target_feature = trunk(style_img).detach()
            loss = StyleLoss(target_feature)
            plain.model.add_module(f"style_loss_{name}", loss)
            plain.style_losses.append(loss)
            plain.style_names.append(name)
    # trim off the layers after the last content and style losses
    for i in range(len(plain.model) - 1, -1, -1):
        if isinstance(plain.model[i], (ContentLoss, StyleLoss)):
            break
    plain.model = plain.model[: i + 1]
    plain.model.eval()
    plain.model.requires_grad_(False)
    return plain


def engine_equivalent_weights(plain: PlainModel, content_weight: float = 1.0, style_weight: float = 10.0,
                              style_layer_weights: dict[str, float] | None = None) -> None:
    """Per-layer weights under which sum(weight * mse_loss) equals the engine's content + style loss.

    The engine divides squared errors by the target's energy (engine/losses.py) and averages
    content layers and (weighted) style layers; `F.mse_loss` divides by the element count.
    The Gram normalisations already agree (a*b*c*d = c*h*w for one image).
    """
    for loss in plain.content_losses:
        loss.weight = content_weight * loss.target.numel() / (float(loss.target.pow(2).sum()) + 1e-8)
        loss.weight /= len(plain.content_losses)
    layer_w = style_layer_weights or {name: 1.0 for name in plain.style_names}
    total = sum(layer_w.values())
    for name, loss in zip(plain.style_names, plain.style_losses):
        energy = float(loss.target.pow(2).sum()) + 1e-8
        loss.weight = style_weight * layer_w[name] / total * loss.target.numel() / energy


def tutorial_weights(plain: PlainModel, content_weight: float = 1.0, style_weight: float = 1e6) -> None:
    for loss in plain.content_losses:
        loss.weight = content_weight
    for loss in plain.style_losses:
        loss.weight = style_weight


def scores(plain: PlainModel, image: torch.Tensor) -> dict[str, float]:
    """The plain formulation's losses of `image`: raw mse sums and the weighted objective."""
    with torch.no_grad():
        plain.model(image)
    content = sum(float(cl.loss) for cl in plain.content_losses)
    style = sum(float(sl.loss) for sl in plain.style_losses)
    weighted_c = sum(cl.weight * float(cl.loss) for cl in plain.content_losses)
    weighted_s = sum(sl.weight * float(sl.loss) for sl in plain.style_losses)
    return {"content_mse": content, "style_mse": style, "content": weighted_c, "style": weighted_s,
            "total": weighted_c + weighted_s}


def run_style_transfer(plain: PlainModel, input_img: torch.Tensor, num_steps: int = 300, progress=None):
    """The tutorial's `run_style_transfer` (L-BFGS defaults); returns the image and the evaluation count."""
    input_img = input_img.clone()
    input_img.requires_grad_(True)
    model = plain.model
    optimizer = torch.optim.LBFGS([input_img])
    run = [0]
    while run[0] < num_steps:
        # shorten the last step so exactly num_steps evaluations run (the tutorial overshoots to 320)
        optimizer.param_groups[0]["max_iter"] = min(20, num_steps - run[0])
        optimizer.param_groups[0]["max_eval"] = min(25, num_steps - run[0])

        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = 0
            content_score = 0
            for sl in plain.style_losses:
                style_score += sl.weight * sl.loss
            for cl in plain.content_losses:
                content_score += cl.weight * cl.loss
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            if progress is not None:
                progress(run[0], time.perf_counter())
            return style_score + content_score

        before = run[0]
        optimizer.step(closure)
        if run[0] == before:  # converged (L-BFGS tolerances): no further evaluation would run
            break
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return input_img.detach(), run[0]


def main(argv=None) -> int:
    """`python -m benchmarks.plain_loop CONTENT STYLE OUT [--size N --steps N]`: the reference run alone."""
    import argparse

    import numpy as np

    from engine.images import read_image, resize, write_image
    from engine.pipeline import output_shape
    from engine.targets import style_at
    from engine.options import StyleOptions
    from engine.tensors import to_array, to_tensor

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--weights", choices=("engine", "tutorial"), default="engine")
    args = p.parse_args(argv)
    started = time.perf_counter()
    content = read_image(args.content)[..., :3]
    h, w = output_shape(content, StyleOptions(size=args.size))
    content_t = to_tensor(resize(content, h, w), torch.device("cpu"))
    style_t = to_tensor(style_at(read_image(args.style), h, w, 1.0), torch.device("cpu"))
    net, cl, sl = engine_network()
    plain = build_model(net, cl, sl, style_t, content_t)
    (engine_equivalent_weights if args.weights == "engine" else tutorial_weights)(plain)
    image, evals = run_style_transfer(plain, content_t, args.steps)
    write_image(args.out, np.asarray(to_array(image)))
    print({"evaluations": evals, "seconds": time.perf_counter() - started, **scores(plain, image)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
