"""difflab: a diffusion-model laboratory (train, sample, accelerate, quantize, measure)."""

__version__ = "0.1.0"
