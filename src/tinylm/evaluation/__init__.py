"""Evaluation: metrics, batched generation with every decoder, and the report (no Lightning here)."""
