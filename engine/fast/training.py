"""Fast-mode training: one transformation network per style, trained on the frames plus samples.

Training uses the optimisation path's losses, layers, network set-up and cached style
Grams, at the size the frames will be stylized at: crops are windows of the frames at
that size and the style is sized for it exactly as `stylize` sizes it, so strokes come
out as large as the optimisation makes them.  The network starts as the identity with
the style's colours (engine/fast/net.py).  The trained network is exported to ONNX, so
applying it (`engine.fast.inference`) needs no autograd and no VGG.

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
from ..targets import TargetSource, style_at
from ..tensors import autocast_factory, check_image, to_array
from ..weights import cache_dir
from .net import OUTPUT_NAME, TransformerNet, colour_transfer
from .options import FastOptions

SAMPLES = Path(__file__).parent.parent / "samples"
# Where models live unless a caller names a folder: `<cache>/fast-models/` (engine.weights.cache_dir).
MODELS_FOLDER = "fast-models"
SAMPLE_IMAGES = ("content.png", "style.png")
# 2: the model's default layers, training at the output size, the colour path (engine/fast/net.py).
FORMAT_VERSION = 2
# Scale jitter of the training crops: each is zoomed by a factor between 1/JITTER and JITTER.
JITTER = 1.2
# Pixels sampled from the training images to fit the starting colour map.
COLOUR_SAMPLES = 200_000

Frame = Union[str, os.PathLike, np.ndarray]


def model_key(style: np.ndarray, options: StyleOptions, fast: FastOptions, size: int) -> str:
    """Digest of everything that shapes a trained model (not the frames: any content generalises), for
    outputs whose longest side is `size`."""
    return data_digest({
        "format": FORMAT_VERSION,
        "size": size,
        "style": array_digest(style),
        "network": [options.model, weights_key(options.model, options.weights, options.seed), options.pooling],
        "layers": [options.content_layers, options.style_layers, options.style_layer_weights],
        "weights": [options.content_weight, options.style_weight, options.tv_weight],
        "style_scale": options.style_scale,
        "seed": options.seed,
        "fast": fast.to_dict(),
    })


def models_folder(options: StyleOptions) -> Path:
    """The shared model folder in the engine's cache (created): a style trained once serves every job."""
    folder = cache_dir(options.cache_dir) / MODELS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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

    `frames` are image paths or HxWx3/4 arrays.  The model is trained for
    outputs whose longest side is `options.size`, else the first frame's (the
    bundled content sample's without frames): `apply` it at that size to get
    the optimisation's stroke size.  Progress (kind "train") is reported once
    per step; `cancel` returning True stops training and raises `Cancelled`
    without writing a model.
    """
    options = options or StyleOptions()
    fast = fast or FastOptions()
    style = check_image("style image", style)
    folder = Path(model_dir)
    if not folder.is_dir():
        raise EngineError(f"model folder does not exist: {folder}")
    frames = list(frames)
    size = working_size(frames, options)
    key = model_key(style, options, fast, size)
    onnx_path = model_path(folder, key)
    if not retrain and _trained(onnx_path, key):
        return onnx_path

    started = time.perf_counter()
    seed = options.seed or 0
    torch.manual_seed(seed)
    net, plan, device = prepare_network(options)
    reporter = Reporter(fast.steps, progress, cancel, kind="train")
    reporter.check_cancel()
    images = training_images(frames, fast, size)
    source = TargetSource(net, options, [style], [1.0], device, autocast_factory(device, "fp32"))
    grams = source.grams(size, size)

    transformer = TransformerNet(fast.width, fast.residual_blocks)
    transformer.set_colour(*colour_transfer(_pixels(images, seed), style_at(style, size, size, options.style_scale)))
    transformer = transformer.to(device)
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
        "size": size,
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
    """One optimiser step on `batch` with the optimisation path's losses; returns the weighted terms.

    Only the loss network runs in `options.precision` (engine.tensors: "auto" is bf16 on a CPU with bf16
    arithmetic); the transformation network, Grams and losses stay fp32."""
    autocast = autocast_factory(batch.device, options.precision)
    output = transformer(batch)
    with torch.no_grad(), autocast():
        content_features = {name: f.float() for name, f in net(batch, plan.content).items()}
    with autocast():
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


def working_size(frames: list[Frame], options: StyleOptions) -> int:
    """The longest side of the outputs a model is trained for: `options.size`, else the first frame's (the
    bundled content sample's when there are no frames)."""
    if options.size is not None:
        return options.size
    first = frames[0] if frames else SAMPLES / SAMPLE_IMAGES[0]
    image = read_image(first) if isinstance(first, (str, os.PathLike)) else check_image("frame 1", first)
    return max(image.shape[:2])


def training_images(frames: Iterable[Frame], fast: FastOptions, size: int) -> list[torch.Tensor]:
    """The frames (evenly subsampled to `max_images`) plus the bundled samples, as 3xHxW uint8 tensors at the
    output size: each scaled so its longest side is `size` (and its shortest at least the crop)."""
    frames = list(frames)
    if len(frames) > fast.max_images:
        frames = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, fast.max_images)]
    sources = frames + [SAMPLES / name for name in SAMPLE_IMAGES if (SAMPLES / name).is_file()]
    images = []
    for i, item in enumerate(sources):
        image = read_image(item) if isinstance(item, (str, os.PathLike)) else check_image(f"frame {i + 1}", item)
        h, w = image.shape[:2]
        factor = max(size / max(h, w), fast.crop / min(h, w))
        image = resize(image[..., :3], max(fast.crop, round(h * factor)), max(fast.crop, round(w * factor)))
        # 8 bits per channel: a 64-frame 1080p shot holds 400 MB, not 1.6 GB.
        images.append(torch.from_numpy(np.ascontiguousarray((image.transpose(2, 0, 1) * 255).round().astype(np.uint8))))
    return images


def _pixels(images: list[torch.Tensor], seed: int) -> np.ndarray:
    """Up to COLOUR_SAMPLES RGB pixels (Nx3, [0, 1]) drawn evenly from the training images."""
    rng = np.random.default_rng(seed)
    share = max(1, COLOUR_SAMPLES // len(images))
    picked = []
    for image in images:
        flat = image.reshape(3, -1).numpy()
        picked.append(flat[:, rng.integers(0, flat.shape[1], min(share, flat.shape[1]))].T)
    return np.concatenate(picked).astype(np.float32) / 255


def sample_batch(images: list[torch.Tensor], fast: FastOptions, generator: torch.Generator) -> torch.Tensor:
    """Random crops with scale jitter (1/JITTER to JITTER) and horizontal flips."""
    crops = []
    for _ in range(fast.batch_size):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = image.shape[1:]
        zoom = JITTER ** (2 * float(torch.rand(1, generator=generator)) - 1)
        side = min(h, w, max(8, round(fast.crop * zoom)))
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = _crop(image, top, left, side, fast.crop)
        crops.append(crop.flip(2) if float(torch.rand(1, generator=generator)) < 0.5 else crop)
    return torch.stack(crops)


def _crop(image: torch.Tensor, top: int, left: int, side: int, size: int) -> torch.Tensor:
    patch = image[:, top : top + side, left : left + side].unsqueeze(0).float() / 255
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
