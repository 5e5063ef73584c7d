"""Corpus sources and cleaning, task building (SFT, classification), the chat template and token files."""
