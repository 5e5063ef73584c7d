"""Byte-level BPE: pre-tokenization, an HF-exact trainer, a cached encoder/decoder, tokenizer.json io.

from tinylm.tokenizer import BPETokenizer
tok = BPETokenizer.train(texts, vocab_size=8192, special_tokens=["<|endoftext|>"])
tok.save("tokenizer.json"); tok = BPETokenizer.load("tokenizer.json")
"""

from tinylm.tokenizer.pretokenize import GPT2_PATTERN, PATTERNS, SPLIT_DIGITS_PATTERN
from tinylm.tokenizer.tokenizer import BPETokenizer

__all__ = ["BPETokenizer", "GPT2_PATTERN", "PATTERNS", "SPLIT_DIGITS_PATTERN"]
