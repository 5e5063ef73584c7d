"""tinylm: train small Transformer language models from scratch, reproducibly."""

__version__ = "0.1.0"
