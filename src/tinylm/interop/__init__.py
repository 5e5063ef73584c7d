"""Conversions between tinylm models and other ecosystems."""
