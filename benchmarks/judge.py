"""One judge of a stylized picture for every time-to-quality and precision comparison: packaged VGG-16.

`Judge(content, style)(picture)` gives the picture's content distance (relative
squared error of its relu4_2 features to the content's), style distance (mean
relative Gram error over relu1_1 ... relu5_1 to the style's) and `objective`
= 1 x content + 10 x style, the engine's default weighting.  It is measured in
fp32 on the CPU, on the picture as an 8-bit file holds it, through the plain
loop's formulation (`benchmarks/plain_loop.py`: `F.mse_loss` of features and
Grams under `engine_equivalent_weights`), so the engine and the plain loop are
judged by the objective both minimise, computed by neither's own code.  Lower is
better; the content image itself scores about 10-15 on the pairs used here.
"""

from __future__ import annotations

import numpy as np

CONTENT_WEIGHT, STYLE_WEIGHT = 1.0, 10.0  # engine.options.StyleOptions' defaults


class Judge:
    def __init__(self, content: np.ndarray, style: np.ndarray, weights: str = "packaged"):
        import torch

        from benchmarks.plain_loop import build_model, engine_equivalent_weights, engine_network
        from engine.targets import style_at
        from engine.tensors import to_tensor

        self.cpu = torch.device("cpu")
        content = np.asarray(content, np.float32)[..., :3]
        self.shape = content.shape[:2]
        net, content_layers, style_layers = engine_network("vgg16", weights)
        self.plain = build_model(net, content_layers, style_layers,
                                 to_tensor(style_at(style, *self.shape, 1.0), self.cpu), to_tensor(content, self.cpu))
        engine_equivalent_weights(self.plain, CONTENT_WEIGHT, STYLE_WEIGHT)

    def __call__(self, picture: np.ndarray) -> dict[str, float]:
        """Distances of `picture` (HxWx3 in [0, 1], the content's size), rounded to 8 bits first."""
        from benchmarks.plain_loop import scores
        from engine.tensors import to_tensor

        picture = np.asarray(picture, np.float32)[..., :3]
        if picture.shape[:2] != self.shape:
            raise ValueError(f"the picture is {picture.shape[:2]}, the content {self.shape}")
        eight_bit = np.round(np.clip(picture, 0, 1) * 255) / 255
        s = scores(self.plain, to_tensor(eight_bit.astype(np.float32), self.cpu))
        return {"content": s["content"] / CONTENT_WEIGHT, "style": s["style"] / STYLE_WEIGHT, "objective": s["total"]}


def levels_apart(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two pictures in 8-bit levels (what the convergence stop measures)."""
    return float(np.abs(np.asarray(a, np.float32)[..., :3] - np.asarray(b, np.float32)[..., :3]).mean() * 255)
