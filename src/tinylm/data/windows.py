"""Token windows of a 1-D token array, as batches that are pure functions of (seed, index, rank).

RandomWindows: batch i is `batch_size` windows of block_size + 1 tokens at starts drawn uniformly from a
generator seeded with (seed, i, rank); x = window[:-1], y = window[1:] (pretraining). FixedWindows:
`n_batches` batches of evenly spaced windows, the same every run (validation, evaluation). BERT reads a
window as [CLS] window [SEP] (`with_cls_sep`).
"""

import numpy as np
import torch
from torch.utils.data import Dataset


def seed_of(*parts: int) -> int:
    """A 62-bit seed mixed from integers (a polynomial hash)."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**62)
    return h


class RandomWindows(Dataset):
    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0):
        if len(tokens) < block_size + 1:
            raise ValueError(f"{len(tokens)} tokens cannot fill one window of block_size + 1 = {block_size + 1}: "
                             "lower block_size or use more data")
        self.tokens, self.block, self.batch, self.seed, self.rank = tokens, block_size, batch_size, seed, rank

    def __len__(self):  # indexable by any step; the sampler decides which
        return 2**62

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(seed_of(self.seed, i, self.rank))
        starts = torch.randint(0, len(self.tokens) - self.block, (self.batch,), generator=g).tolist()
        x = torch.from_numpy(np.stack([self.tokens[s:s + self.block + 1].astype(np.int64) for s in starts]))
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}


class FixedWindows(Dataset):
    """`n_batches` batches of evenly spaced windows (the same every run)."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, n_batches: int):
        n = len(tokens) - block_size  # number of window starts; the last window ends on the last token
        if n < 1:
            raise ValueError(f"validation split has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}")
        if n_batches * batch_size > n:  # more windows than starts: the same windows again, for nothing
            raise ValueError(f"{n_batches} validation batches of {batch_size} windows ask for {n_batches * batch_size}"
                             f" windows, but the validation split has only {n} distinct ones: lower "
                             f"trainer.val_batches to at most {max(1, n // batch_size)}")
        self.tokens, self.block, self.batch = tokens, block_size, batch_size
        self.starts = np.linspace(0, n - 1, num=n_batches * batch_size).astype(np.int64).reshape(n_batches, batch_size)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        x = torch.from_numpy(np.stack([self.tokens[s:s + self.block + 1].astype(np.int64) for s in self.starts[i]]))
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}


def with_cls_sep(x: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
    """(B, T) token windows -> (B, T + 2) BERT inputs [CLS] window [SEP]."""
    col = torch.ones(x.size(0), 1, dtype=x.dtype, device=x.device)
    return torch.cat([col * cls_id, x, col * sep_id], dim=1)
