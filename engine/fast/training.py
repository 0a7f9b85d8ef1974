"""Fast-mode training: one transformation network per style, trained on the frames plus samples.

Training uses the optimisation path's losses, network set-up and cached style
Grams; the trained network is exported to ONNX, so applying it
(`engine.fast.inference`) needs no autograd and no VGG.

A model is three files in one folder, `fast-<key>.onnx` (what `apply` runs),
`.pt` (the torch weights, to fine-tune or re-export) and `.json` (what it was
trained from); `<key>` digests the style image and every option that shapes the
result, so `train` returns the existing model instead of training again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
from torch.nn import functional as F

from .. import losses, onnx_export
from ..errors import EngineError
from ..files import atomic_write
from ..fingerprints import array_digest, data_digest, weights_key
from ..images import read_image, resize
from ..model import LayerPlan, prepare_network
from ..networks import FeatureNet
from ..options import StyleOptions
from ..progress import CancelFn, ProgressFn, Reporter
from ..targets import TargetSource
from ..tensors import autocast_factory, check_image, to_array
from .net import OUTPUT_NAME, TransformerNet
from .options import FastOptions

SAMPLES = Path(__file__).parent.parent / "samples"
SAMPLE_IMAGES = ("content.png", "style.png")
# Johnson et al.'s loss layers; they exist in VGG-16 and VGG-19.  NIN keeps its own defaults.
VGG_CONTENT_LAYERS = ("relu2_2",)
VGG_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
FORMAT_VERSION = 1

Frame = Union[str, os.PathLike, np.ndarray]


def fast_options(options: StyleOptions) -> StyleOptions:
    """`options` with Johnson et al.'s loss layers where the caller left the layers to the model."""
    if options.model == "nin":
        return options
    return options.replace(
        content_layers=options.content_layers or VGG_CONTENT_LAYERS,
        style_layers=options.style_layers or VGG_STYLE_LAYERS,
    )


def model_key(style: np.ndarray, options: StyleOptions, fast: FastOptions) -> str:
    """Digest of everything that shapes a trained model (not the frames: any content generalises)."""
    options = fast_options(options)
    return data_digest({
        "format": FORMAT_VERSION,
        "style": array_digest(style),
        "network": [options.model, weights_key(options.model, options.weights, options.seed), options.pooling],
        "layers": [options.content_layers, options.style_layers, options.style_layer_weights],
        "weights": [options.content_weight, options.style_weight, options.tv_weight],
        "style_scale": options.style_scale,
        "seed": options.seed,
        "fast": fast.to_dict(),
    })


def model_path(model_dir: str | os.PathLike, key: str) -> Path:
    return Path(model_dir) / f"fast-{key[:16]}.onnx"


def train(
    frames: Iterable[Frame],
    style: np.ndarray,
    options: StyleOptions | None = None,
    fast: FastOptions | None = None,
    model_dir: str | os.PathLike = ".",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    retrain: bool = False,
) -> Path:
    """Train (or reuse) a network for `style` on `frames` plus the bundled samples; returns the .onnx path.

    `frames` are image paths or HxWx3/4 arrays.  Progress (kind "train") is
    reported once per step; `cancel` returning True stops training and raises
    `Cancelled` without writing a model.
    """
    options = fast_options(options or StyleOptions())
    fast = fast or FastOptions()
    style = check_image("style image", style)
    folder = Path(model_dir)
    if not folder.is_dir():
        raise EngineError(f"model folder does not exist: {folder}")
    key = model_key(style, options, fast)
    onnx_path = model_path(folder, key)
    if not retrain and _trained(onnx_path, key):
        return onnx_path

    started = time.perf_counter()
    seed = options.seed or 0
    torch.manual_seed(seed)
    net, plan, device = prepare_network(options)
    reporter = Reporter(fast.steps, progress, cancel, kind="train")
    reporter.check_cancel()
    images = training_images(frames, fast)
    source = TargetSource(net, options, [style], [1.0], device, autocast_factory(device, "fp32"))
    grams = source.grams(fast.crop, fast.crop)

    transformer = TransformerNet(fast.width, fast.residual_blocks).to(device)
    optimizer = torch.optim.Adam(transformer.parameters(), lr=fast.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    preview = _crop(images[0], 0, 0, min(images[0].shape[1:]), fast.crop).unsqueeze(0).to(device)
    for _ in range(fast.steps):
        batch = sample_batch(images, fast, generator).to(device)
        terms = training_step(transformer, net, optimizer, batch, grams, options, plan)
        reporter.step(terms, lambda: _stylize_tensor(transformer, preview))

    transformer = transformer.cpu().eval()
    info = {
        "key": key,
        "format": FORMAT_VERSION,
        "style_sha256": array_digest(style),
        "options": options.to_dict(),
        "fast": fast.to_dict(),
        "images": len(images),
        "final_losses": reporter.last_losses,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return save(transformer, onnx_path, info)


def training_step(
    transformer: TransformerNet,
    net: FeatureNet,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    grams: dict[str, torch.Tensor],
    options: StyleOptions,
    plan: LayerPlan,
) -> dict[str, float]:
    """One optimiser step on `batch` with the optimisation path's losses; returns the weighted terms."""
    output = transformer(batch)
    with torch.no_grad():
        content_features = net(batch, plan.content)
    features = net(output, plan.layers)
    parts = {
        "content": options.content_weight * losses.content_loss(features, content_features),
        "style": options.style_weight * losses.style_loss(features, grams, plan.weights),
        "tv": options.tv_weight * losses.tv_loss(output),
    }
    total = sum(parts.values())
    terms = losses.loss_terms(parts, total)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return terms


def training_images(frames: Iterable[Frame], fast: FastOptions) -> list[torch.Tensor]:
    """The frames (evenly subsampled to `max_images`) plus the bundled samples, as 3xHxW tensors.

    Each is resized so its shorter side lies between `crop` and 2 x `crop`:
    room for scale jitter without holding full-resolution frames in memory.
    """
    frames = list(frames)
    if len(frames) > fast.max_images:
        frames = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, fast.max_images)]
    sources = frames + [SAMPLES / name for name in SAMPLE_IMAGES if (SAMPLES / name).is_file()]
    if not sources:
        raise EngineError("fast mode needs at least one content image to train on")
    images = []
    for i, item in enumerate(sources):
        image = read_image(item) if isinstance(item, (str, os.PathLike)) else check_image(f"frame {i + 1}", item)
        h, w = image.shape[:2]
        factor = min(max(fast.crop / min(h, w), 1.0), 2 * fast.crop / min(h, w))
        image = resize(image[..., :3], max(fast.crop, round(h * factor)), max(fast.crop, round(w * factor)))
        images.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
    return images


def sample_batch(images: list[torch.Tensor], fast: FastOptions, generator: torch.Generator) -> torch.Tensor:
    """Random crops with scale jitter (0.7x to 1.4x) and horizontal flips."""
    crops = []
    for _ in range(fast.batch_size):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = image.shape[1:]
        zoom = 2.0 ** (float(torch.rand(1, generator=generator)) - 0.5)
        side = min(h, w, max(8, round(fast.crop * zoom)))
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = _crop(image, top, left, side, fast.crop)
        crops.append(crop.flip(2) if float(torch.rand(1, generator=generator)) < 0.5 else crop)
    return torch.stack(crops)


def _crop(image: torch.Tensor, top: int, left: int, side: int, size: int) -> torch.Tensor:
    patch = image[:, top : top + side, left : left + side].unsqueeze(0)
    return F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def _stylize_tensor(transformer: TransformerNet, image: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return to_array(transformer(image))


def save(transformer: TransformerNet, onnx_path: Path, info: dict) -> Path:
    """Write .pt, .onnx, then .json (last: its presence marks a complete model), each atomically."""
    with atomic_write(onnx_path.with_suffix(".pt")) as tmp:
        torch.save(
            {"state_dict": transformer.state_dict(), "width": info["fast"]["width"],
             "residual_blocks": info["fast"]["residual_blocks"]},
            tmp,
        )
    onnx_export.export_module(transformer, torch.rand(1, 3, 64, 64), onnx_path, [OUTPUT_NAME])
    with atomic_write(onnx_path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return onnx_path


def _trained(onnx_path: Path, key: str) -> bool:
    meta = onnx_path.with_suffix(".json")
    if not (meta.is_file() and onnx_path.is_file()):
        return False
    try:
        return json.loads(meta.read_text()).get("key") == key
    except (OSError, ValueError):
        return False
