"""Fast mode: a feed-forward network trained once per style, then applied per frame.

Johnson et al. 2016 ("Perceptual losses for real-time style transfer") with
instance normalisation (Ulyanov et al. 2016), and nearest-neighbour upsampling
plus convolution instead of transposed convolution, which avoids checkerboard
artefacts (Odena et al. 2016).

- `engine.fast.options`: `FastOptions` (no torch, so hosts can build them)
- `engine.fast.net`: the transformation network
- `engine.fast.training`: `train` (or reuse) a model for a style
- `engine.fast.inference`: `apply` a trained model under onnxruntime, one image or a sequence

This package imports nothing itself, so importing `engine.fast.options` does not load torch.
"""
