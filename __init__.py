"""Entry point Blender loads for the Neural Style extension; the add-on lives in `neural_style_addon/`."""

from .neural_style_addon import register, unregister

__all__ = ["register", "unregister"]
