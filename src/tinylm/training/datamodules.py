"""Batches for training, as pure functions of (seed, step, rank).

Pretraining: the token windows of `tinylm.data.windows` (batch i drawn from (seed, i, rank); validation
on fixed windows). Fine-tuning sets (SFT, classification, seq2seq): batch i takes indices from a per-epoch
permutation seeded with (seed, epoch), padded to the longest item in the batch. A run resumed at optimizer
step s starts at micro-batch s * accumulate_grad_batches and sees exactly the batches it would have seen;
each DDP rank draws its own batches (Lightning's distributed sampler is turned off).
"""

from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tinylm.data.windows import seed_of


class StepRange(Sampler):
    """Indices start, start + 1, ..., stop - 1 (one per micro-batch).

    len() is `stop`, the whole run: on a resume Lightning restores how many batches of the epoch it has already
    seen (`start`) and counts them against the loader's length, so a length of stop - start would end the epoch
    early and restart the loader at `start`, replaying batches.
    """

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self):
        return self.stop


class StepBatchSampler(Sampler):
    """Batch i = items [j*B, (j+1)*B) of the permutation for epoch e (i = e * batches_per_epoch + j).

    Yields batches start, ..., stop - 1; len() is `stop` (see StepRange). Given `targets` (each item's count
    of loss targets), it yields (item, step_targets) pairs instead (`StepTargets` reads them): step_targets is
    the mean count per micro-batch over the optimizer step, its `accumulate` micro-batches on each of `world`
    ranks, every rank's batches being drawn here too (a pure function of seed, epoch and rank).
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, *,
                 targets: Sequence[int] | None = None, accumulate: int = 1, world: int = 1):
        if n_items < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the data ({n_items} items): lower the batch size")
        self.n, self.batch, self.seed, self.rank, self.start, self.stop = n_items, batch_size, seed, rank, start, stop
        self.per_epoch = n_items // batch_size
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        self.accumulate, self.world = accumulate, world
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def batch_of(self, i: int, rank: int) -> np.ndarray:
        """The item indices of micro-batch i on `rank`."""
        epoch, j = divmod(i, self.per_epoch)
        if (epoch, rank) not in self._perms:
            if len(self._perms) >= 2 * self.world:  # keeps a step across two epochs; more only recomputes
                self._perms.clear()
            g = torch.Generator().manual_seed(seed_of(self.seed, epoch, rank))
            self._perms[epoch, rank] = torch.randperm(self.n, generator=g).numpy()
        return self._perms[epoch, rank][j * self.batch:(j + 1) * self.batch]

    def step_targets(self, step: int) -> float:
        """Mean targets per micro-batch over optimizer step `step`, all ranks."""
        first = step * self.accumulate
        total = sum(int(self.targets[self.batch_of(i, r)].sum())
                    for i in range(first, first + self.accumulate) for r in range(self.world))
        return total / (self.accumulate * self.world)

    def __iter__(self):
        for i in range(self.start, self.stop):
            idx = self.batch_of(i, self.rank).tolist()
            if self.targets is None:
                yield idx
                continue
            if i == self.start or i % self.accumulate == 0:  # once per step
                m = self.step_targets(i // self.accumulate)
            yield [(j, m) for j in idx]

    def __len__(self):
        return self.stop


class StepTargets(Dataset):
    """`items` whose item (j, m) is items[j] with step_targets = m (from a StepBatchSampler given targets)."""

    def __init__(self, items: Sequence[dict]):
        self.items = items

    def __getitem__(self, key: tuple[int, float]) -> dict:
        j, m = key
        return {**self.items[j], "step_targets": m}

    def __len__(self):
        return len(self.items)


def target_counts(items: Sequence[dict]) -> list[int]:
    """Each item's loss targets: its labels other than -100."""
    return [sum(t != -100 for t in it["labels"]) for it in items]


def pad_collate(pad_id: int, keys_pad: dict[str, int] | None = None) -> Callable[[list[dict]], dict]:
    """Collate dict items of 1-D sequences into right-padded (B, T) tensors (+ attention masks).

    keys_pad maps a key to its pad value (default: pad_id; "labels" -> -100); scalar fields are stacked.
    Every padded key but labels gets a mask: input_ids `attention_mask`, any other `<k without _ids>_mask`
    (src_ids -> src_mask).
    """
    keys_pad = {"labels": -100, **(keys_pad or {})}

    def collate(items: list[dict]) -> dict:
        out = {}
        for key in items[0]:
            vals = [it[key] for it in items]
            if np.isscalar(vals[0]) or getattr(vals[0], "ndim", 1) == 0:
                out[key] = torch.tensor(vals)
                continue
            T = max(len(v) for v in vals)
            pad = keys_pad.get(key, pad_id)
            out[key] = torch.tensor([list(v) + [pad] * (T - len(v)) for v in vals], dtype=torch.long)
            if key != "labels":
                mask = torch.tensor([[1] * len(v) + [0] * (T - len(v)) for v in vals], dtype=torch.long)
                out["attention_mask" if key == "input_ids" else f"{key.removesuffix('_ids')}_mask"] = mask
        return out

    return collate


class StepDataModule(pl.LightningDataModule):
    """Train loader indexed by step (resumable), fixed validation loader. step_targets: each train batch
    carries `step_targets` (see StepBatchSampler; the items are dicts with "labels"), for a token-mean loss
    over the whole optimizer step."""

    def __init__(self, train: Dataset, val: Dataset, *, batch_size: int | None, seed: int, max_steps: int,
                 accumulate: int = 1, collate: Callable | None = None, num_workers: int = 0,
                 val_batch_size: int | None = None, step_targets: bool = False):
        super().__init__()
        self.train_set, self.val_set, self.batch_size, self.seed = train, val, batch_size, seed
        self.max_steps, self.accumulate, self.collate, self.num_workers = max_steps, accumulate, collate, num_workers
        self.val_batch_size = val_batch_size
        if step_targets and batch_size is None:
            raise ValueError("step_targets counts the labels of items: it needs batch_size (not whole batches)")
        self.targets = target_counts(train) if step_targets else None

    def _loader(self, ds, **kw):
        """Batches in pinned memory where they go to a CUDA device, so that Lightning's non-blocking copy is one."""
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(ds, collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=cuda, **kw)

    def train_dataloader(self):
        start = self.trainer.global_step * self.accumulate if self.trainer else 0
        stop = self.max_steps * self.accumulate
        rank = self.trainer.global_rank if self.trainer else 0
        if self.batch_size is None:  # the dataset yields whole batches (RandomWindows)
            self.train_set.rank = rank
            return self._loader(self.train_set, batch_size=None, sampler=StepRange(start, stop))
        world = self.trainer.world_size if self.trainer else 1
        sampler = StepBatchSampler(len(self.train_set), self.batch_size, self.seed, start, stop, rank,
                                   targets=self.targets, accumulate=self.accumulate, world=world)
        train = self.train_set if self.targets is None else StepTargets(self.train_set)
        return self._loader(train, batch_sampler=sampler)

    def val_dataloader(self):
        if self.val_batch_size is None:
            return self._loader(self.val_set, batch_size=None)
        return self._loader(self.val_set, batch_size=self.val_batch_size, shuffle=False)
