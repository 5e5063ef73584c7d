"""Transformer building blocks in plain PyTorch (no Lightning, Hydra, DVC or MLflow here)."""
