"""Fast mode: a feed-forward network trained once per style, then applied per frame.

Johnson et al. 2016 ("Perceptual losses for real-time style transfer") with
instance normalisation (Ulyanov et al. 2016), and nearest-neighbour upsampling
plus convolution instead of transposed convolution, which avoids checkerboard
artefacts (Odena et al. 2016).  Training uses the optimisation path's losses,
network and cached style Grams; the trained network is exported to ONNX and
runs under onnxruntime, so applying it needs no autograd and no VGG.

A model is three files in one folder, `fast-<key>.onnx` (what `apply` runs),
`.pt` (the torch weights, to fine-tune or re-export) and `.json` (what it was
trained from); `<key>` digests the style image and every option that shapes the
result, so `train` returns the existing model instead of training again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import losses, onnx_export
from .errors import Cancelled, EngineError
from .fast_options import WIDTHS, FastOptions
from .fingerprints import array_digest, data_digest, weights_key
from .images import WRITABLE, read_image, resize, write_image
from .networks import FeatureNet
from .optimize import Reporter, _autocast_factory, _check_image, layer_plan, output_shape, pick_device, to_array
from .options import StyleOptions
from .progress import CancelFn, Progress, ProgressFn
from .targets import TargetSource
from .weights import load_network

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_IMAGES = ("content.png", "style.png")
# Johnson et al.'s loss layers; they exist in VGG-16 and VGG-19.  NIN keeps its own defaults.
VGG_CONTENT_LAYERS = ("relu2_2",)
VGG_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
FORMAT_VERSION = 1
OUTPUT_NAME = "stylized"

Frame = Union[str, os.PathLike, np.ndarray]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


def _conv_norm_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(cin, cout, kernel, stride), nn.InstanceNorm2d(cout, affine=True), nn.ReLU()]


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, 3),
            _conv(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """RGB [0, 1] in, stylized RGB [0, 1] out, same size (height and width multiples of 4)."""

    def __init__(self, width: str = "default", residual_blocks: int = 5):
        super().__init__()
        c1, c2, c3 = WIDTHS[width]
        self.body = nn.Sequential(
            *_conv_norm_relu(3, c1, 9),
            *_conv_norm_relu(c1, c2, 3, 2),
            *_conv_norm_relu(c2, c3, 3, 2),
            *(Residual(c3) for _ in range(residual_blocks)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(c3, c2, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(c2, c1, 3),
            _conv(c1, 3, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


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

    `frames` are image paths or HxWx3/4 arrays.  Progress is reported once per
    step; `cancel` returning True stops training and raises `Cancelled`
    without writing a model.
    """
    options = fast_options(options or StyleOptions())
    fast = fast or FastOptions()
    style = _check_image("style image", style)
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
    device = pick_device(options.device)
    net = load_network(options.model, options.weights, options.pooling, options.cache_dir, seed)
    plan = layer_plan(net, options)
    net = net.truncated(plan[0] + plan[1]).to(device)
    reporter = Reporter(fast.steps, progress, cancel)
    reporter.stage = "preparing"
    reporter.check_cancel()
    images = training_images(frames, fast)
    source = TargetSource(net, options, [style], [1.0], device, _autocast_factory(device, "fp32"))
    grams = source.grams(fast.crop, fast.crop)

    transformer = TransformerNet(fast.width, fast.residual_blocks).to(device)
    optimizer = torch.optim.Adam(transformer.parameters(), lr=fast.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    preview = _crop(images[0], 0, 0, min(images[0].shape[1:]), fast.crop).unsqueeze(0).to(device)
    reporter.stage = "training"
    for _ in range(fast.steps):
        batch = sample_batch(images, fast, generator).to(device)
        terms = training_step(transformer, net, optimizer, batch, grams, options, plan)
        reporter.step(terms, lambda: _stylize_tensor(transformer, preview))

    transformer = transformer.cpu().eval()
    info = {
        "key": key,
        "format": FORMAT_VERSION,
        "style_sha256": array_digest(style),
        "options": {k: v for k, v in options.to_dict().items() if k != "extra"},
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
    plan: tuple[tuple[str, ...], tuple[str, ...], dict[str, float]],
) -> dict[str, float]:
    """One optimiser step on `batch` with the optimisation path's losses; returns the weighted terms."""
    content_layers, style_layers, layer_weights = plan
    output = transformer(batch)
    with torch.no_grad():
        content_features = net(batch, content_layers)
    features = net(output, tuple(dict.fromkeys(content_layers + style_layers)))
    parts = {
        "content": options.content_weight * losses.content_loss(features, content_features),
        "style": options.style_weight * batch_style_loss(features, grams, layer_weights),
        "tv": options.tv_weight * losses.tv_loss(output),
    }
    total = sum(parts.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {**{k: float(v.detach()) for k, v in parts.items()}, "total": float(total.detach())}


def batch_style_loss(
    features: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], layer_weights: dict[str, float]
) -> torch.Tensor:
    """`losses.style_loss` per image of the batch (its Gram treats a batch as one image), averaged."""
    batch = next(iter(features.values())).shape[0]
    per_image = [
        losses.style_loss({name: f[i : i + 1] for name, f in features.items()}, grams, layer_weights)
        for i in range(batch)
    ]
    return sum(per_image) / batch


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
        image = read_image(item) if isinstance(item, (str, os.PathLike)) else _check_image(f"frame {i + 1}", item)
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
    """Write .pt, .onnx, then .json (last: its presence marks a complete model)."""
    torch.save(
        {"state_dict": transformer.state_dict(), "width": info["fast"]["width"],
         "residual_blocks": info["fast"]["residual_blocks"]},
        onnx_path.with_suffix(".pt"),
    )
    onnx_export.export_module(transformer, torch.rand(1, 3, 64, 64), onnx_path, [OUTPUT_NAME])
    fd, tmp = tempfile.mkstemp(dir=onnx_path.parent, prefix=".fast.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh, indent=2)
    os.replace(tmp, onnx_path.with_suffix(".json"))
    return onnx_path


def _trained(onnx_path: Path, key: str) -> bool:
    meta = onnx_path.with_suffix(".json")
    if not (meta.is_file() and onnx_path.is_file()):
        return False
    try:
        return json.loads(meta.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def apply(model: str | os.PathLike, image: np.ndarray, device: str = "auto", size: int | None = None) -> np.ndarray:
    """Stylize one HxWx3/4 sRGB array with a trained model; alpha passes through unchanged."""
    image = _check_image("image", image)
    session = onnx_export.session(_onnx_file(model), device, arena=True)  # frames share one size
    height, width = output_shape(image, StyleOptions(size=size))
    rgb = resize(image[..., :3], height, width)
    # The network halves the size twice, so pad to multiples of 4 and crop afterwards.
    pad_h, pad_w = -height % 4, -width % 4
    padded = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(height, width) > 4 else "edge")
    out = onnx_export.run(session, padded.transpose(2, 0, 1)[None])[0][0].transpose(1, 2, 0)[:height, :width]
    out = np.clip(out, 0, 1).astype(np.float32)
    if image.shape[2] == 4:
        out = np.concatenate([out, resize(image[..., 3:], height, width)], axis=2)
    return out


def apply_sequence(
    model: str | os.PathLike,
    inputs: list[str | os.PathLike],
    output_dir: str | os.PathLike,
    device: str = "auto",
    size: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[Path]:
    """Stylize image files into `output_dir` under their own names; one progress report per frame."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise EngineError(f"output folder does not exist: {output_dir}")
    started = time.perf_counter()
    written = []
    for index, path in enumerate(inputs, start=1):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        result = apply(model, read_image(path), device, size)
        written.append(write_image(output_dir / Path(path).name, result, protect=tuple(inputs)))
        if progress is not None:
            progress(Progress(index, len(inputs), {}, time.perf_counter() - started,
                              f"frame {index}/{len(inputs)}", lambda r=result: r))
    return written


def _onnx_file(model: str | os.PathLike) -> Path:
    """A model given by any of its three files."""
    path = Path(model)
    if path.suffix in (".json", ".pt"):
        path = path.with_suffix(".onnx")
    if not path.is_file():
        raise EngineError(f"fast-mode model not found: {path} (train one with `neural-style train-fast`)")
    return path


def frames_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found (sorted) in named folders."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in WRITABLE and p.is_file())
        elif item.is_file():
            found.append(item)
        else:
            raise EngineError(f"no such file or folder: {item}")
    return found
