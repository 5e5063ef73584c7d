"""Step-indexed, resumable batches (training/datamodules.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tinylm.data.windows import FixedWindows, RandomWindows
from tinylm.training.datamodules import StepBatchSampler, StepDataModule, pad_collate

TOKENS = np.arange(1000, dtype=np.uint16)  # token value = its position: windows are easy to read


# ---- RandomWindows -----------------------------------------------------------------------------------------
def test_random_windows_are_a_pure_function_of_seed_step_rank():
    ds = RandomWindows(TOKENS, block_size=16, batch_size=4, seed=3)
    b = ds[5]
    assert b["input_ids"].shape == b["labels"].shape == (4, 16)
    assert b["input_ids"].dtype == torch.long
    again = RandomWindows(TOKENS, 16, 4, seed=3)[5]
    assert torch.equal(b["input_ids"], again["input_ids"]) and torch.equal(b["labels"], again["labels"])
    assert torch.equal(ds[5]["input_ids"], b["input_ids"])  # order of access does not matter
    assert not torch.equal(ds[6]["input_ids"], b["input_ids"])
    assert not torch.equal(RandomWindows(TOKENS, 16, 4, seed=4)[5]["input_ids"], b["input_ids"])
    assert not torch.equal(RandomWindows(TOKENS, 16, 4, seed=3, rank=1)[5]["input_ids"], b["input_ids"])


def test_random_windows_are_contiguous_and_shifted_by_one():
    b = RandomWindows(TOKENS, 16, 8, seed=0)[0]
    x, y = b["input_ids"], b["labels"]
    assert torch.equal(y, x + 1)  # y[t] is the token after x[t]
    assert torch.equal(x, x[:, :1] + torch.arange(16))


def test_random_windows_reach_every_start_including_the_last():
    block = 8
    tokens = np.arange(block + 3, dtype=np.uint16)  # windows of 9 tokens: starts 0, 1, 2
    ds = RandomWindows(tokens, block, batch_size=16, seed=0)
    starts = {int(s) for i in range(20) for s in ds[i]["input_ids"][:, 0]}
    assert starts == {0, 1, 2}
    assert int(ds[0]["labels"].max()) <= block + 2


def test_random_windows_too_little_data_raises():
    with pytest.raises(ValueError, match="block_size"):
        RandomWindows(np.arange(8, dtype=np.uint16), block_size=8, batch_size=1, seed=0)
    RandomWindows(np.arange(9, dtype=np.uint16), block_size=8, batch_size=1, seed=0)[0]  # exactly one window


# ---- FixedWindows ------------------------------------------------------------------------------------------
def test_fixed_windows_are_fixed_and_cover_the_split():
    tokens = np.arange(500, dtype=np.uint16)
    ds = FixedWindows(tokens, block_size=16, batch_size=4, n_batches=8)
    assert len(ds) == 8
    again = FixedWindows(tokens, 16, 4, 8)
    for i in range(len(ds)):
        assert torch.equal(ds[i]["input_ids"], again[i]["input_ids"])
        assert torch.equal(ds[i]["labels"], ds[i]["input_ids"] + 1)
    starts = np.concatenate([ds[i]["input_ids"][:, 0].numpy() for i in range(len(ds))])
    assert starts[0] == 0 and ds[len(ds) - 1]["labels"][-1, -1] == 499  # first and last token are used
    assert (np.diff(starts) > 0).all()  # evenly spread, no repeats
    assert np.ptp(np.diff(starts)) <= 1


def test_fixed_windows_too_little_data_raises():
    with pytest.raises(ValueError, match="validation split"):
        FixedWindows(np.arange(16, dtype=np.uint16), block_size=16, batch_size=1, n_batches=1)
    FixedWindows(np.arange(48, dtype=np.uint16), block_size=16, batch_size=4, n_batches=8)  # 32 windows, 32 starts
    with pytest.raises(ValueError, match=r"ask for 36 windows, .* only 32 distinct ones: lower trainer.val_batches "
                                         r"to at most 8"):  # 100000 batches once ran for minutes on repeats
        FixedWindows(np.arange(48, dtype=np.uint16), block_size=16, batch_size=4, n_batches=9)


# ---- StepBatchSampler --------------------------------------------------------------------------------------
def batches(n=103, B=10, seed=0, start=0, stop=10, rank=0):
    return list(StepBatchSampler(n, B, seed, start, stop, rank))


def test_batches_of_an_epoch_are_disjoint_and_cover_floor_n_over_b_items():
    epoch = batches(n=103, B=10, start=0, stop=10)  # 103 // 10 = 10 batches per epoch
    assert all(len(b) == 10 for b in epoch)
    flat = [i for b in epoch for i in b]
    assert len(set(flat)) == len(flat) == 100
    assert set(flat) <= set(range(103))
    assert epoch != sorted(epoch)  # shuffled


def test_epochs_differ_and_seeds_and_ranks_differ():
    two = batches(start=0, stop=20)
    assert two[:10] != two[10:]
    assert batches(seed=1) != batches(seed=0)
    assert batches(rank=1) != batches(rank=0)
    assert batches() == batches()


def test_start_offset_reproduces_the_tail_of_an_uninterrupted_sequence():
    full = batches(start=0, stop=35)
    assert batches(start=7, stop=35) == full[7:]
    assert batches(start=23, stop=35) == full[23:]  # resumed in the third epoch
    assert len(StepBatchSampler(103, 10, 0, 7, 35)) == 35  # the whole run (Lightning counts restored batches)


@pytest.mark.parametrize("accumulate,world", [(1, 1), (3, 1), (2, 2), (3, 3)])
def test_step_targets_are_the_mean_over_the_steps_micro_batches_on_every_rank(accumulate, world):
    """Brute force: each yielded batch is the plain sampler's, paired with sum(targets) over every micro-batch of
    its optimizer step on every rank / (accumulate x world); steps cross epochs (13 batches per epoch)."""
    n, B, seed, stop = 53, 4, 7, 12 * accumulate
    targets = np.random.default_rng(0).integers(0, 20, n)
    plain = {r: batches(n, B, seed, 0, stop, r) for r in range(world)}
    for r in range(world):
        got = list(StepBatchSampler(n, B, seed, 0, stop, r, targets=targets, accumulate=accumulate, world=world))
        for i, batch in enumerate(got):
            assert [j for j, _ in batch] == plain[r][i]
            first = i // accumulate * accumulate
            want = sum(targets[b].sum() for q in range(world) for b in plain[q][first:first + accumulate])
            assert {m for _, m in batch} == {want / (accumulate * world)}
    resumed = StepBatchSampler(n, B, seed, 5 * accumulate, stop, world - 1, targets=targets, accumulate=accumulate,
                               world=world)  # the last rank's, as `got`
    assert list(resumed) == got[5 * accumulate:]


def test_step_datamodule_batches_carry_step_targets():
    items = [{"input_ids": list(range(2 + i % 5)), "labels": [-100] * (1 + i % 5) + [7]} for i in range(12)]
    items[3]["labels"] = [-100, 5, 6, 7, 8]  # 4 targets
    dm = StepDataModule(items, items, batch_size=3, seed=0, max_steps=2, accumulate=2, collate=pad_collate(0),
                        step_targets=True)
    b0, b1, b2 = list(dm.train_dataloader())[:3]
    total = sum(int((b["labels"] != -100).sum()) for b in (b0, b1))
    assert b0["step_targets"].tolist() == b1["step_targets"].tolist() == [total / 2] * 3
    assert b2["step_targets"].dtype == torch.float32 and set(b0) == {"input_ids", "attention_mask", "labels",
                                                                     "step_targets"}


def test_batch_larger_than_data_raises():
    with pytest.raises(ValueError, match="larger than the data"):
        StepBatchSampler(5, 8, 0, 0, 1)


# ---- pad_collate -------------------------------------------------------------------------------------------
def test_pad_collate_causal_lm_items():
    items = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = pad_collate(pad_id=0)(items)
    assert set(b) == {"input_ids", "labels", "attention_mask"}
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["input_ids"].dtype == b["labels"].dtype == torch.long


def test_pad_collate_seq2seq_and_scalar_labels():
    items = [{"src_ids": [4, 5], "tgt_ids": [1, 9, 9, 9], "labels": [9, 9, 9, 2]},
             {"src_ids": [6, 7, 8], "tgt_ids": [1, 9], "labels": [9, 2]}]
    b = pad_collate(pad_id=3)(items)
    assert set(b) == {"src_ids", "tgt_ids", "labels", "src_mask", "tgt_mask"}
    assert b["src_ids"].tolist() == [[4, 5, 3], [6, 7, 8]]
    assert b["src_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b["tgt_ids"].tolist() == [[1, 9, 9, 9], [1, 9, 3, 3]]
    assert b["tgt_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["labels"].tolist() == [[9, 9, 9, 2], [9, 2, -100, -100]]
    cls = pad_collate(pad_id=0)([{"input_ids": [4, 5], "labels": 2},
                                 {"input_ids": [6], "labels": np.int64(0)}])
    assert cls["labels"].tolist() == [2, 0] and cls["input_ids"].tolist() == [[4, 5], [6, 0]]
    custom = pad_collate(pad_id=0, keys_pad={"input_ids": 7})(items[:1] + [{"src_ids": [1], "tgt_ids": [1],
                                                                            "labels": [2]}])
    assert custom["labels"][1].tolist() == [2, -100, -100, -100]


# ---- StepDataModule ----------------------------------------------------------------------------------------
def test_step_datamodule_without_trainer_windows():
    train = RandomWindows(TOKENS, 16, 4, seed=2)
    dm = StepDataModule(train, FixedWindows(TOKENS, 16, 4, 3), batch_size=None, seed=2, max_steps=5,
                        accumulate=2)
    got = list(dm.train_dataloader())
    assert len(got) == 10  # max_steps * accumulate micro-batches, indexed from 0
    for i, b in enumerate(got):
        assert torch.equal(b["input_ids"], train[i]["input_ids"])
    val = list(dm.val_dataloader())
    assert len(val) == 3 and torch.equal(val[2]["labels"], FixedWindows(TOKENS, 16, 4, 3)[2]["labels"])


def test_step_datamodule_without_trainer_items():
    items = [{"input_ids": list(range(1, 2 + i % 5)), "labels": list(range(1, 2 + i % 5))} for i in range(20)]
    collate = pad_collate(pad_id=0)
    dm = StepDataModule(items, items[:5], batch_size=4, seed=0, max_steps=7, collate=collate,
                        val_batch_size=2)
    got = list(dm.train_dataloader())
    order = batches(n=20, B=4, seed=0, start=0, stop=7)
    assert len(got) == 7
    for b, idx in zip(got, order, strict=True):
        expected = collate([items[i] for i in idx])
        assert b.keys() == expected.keys()
        assert all(torch.equal(b[k], expected[k]) for k in b)
    val = list(dm.val_dataloader())
    assert [len(v["input_ids"]) for v in val] == [2, 2, 1]
    assert val[0]["input_ids"].tolist() == [[1, 0], [1, 2]]


def test_with_cls_sep_frames_each_window():
    from tinylm.data.windows import with_cls_sep

    x = torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert with_cls_sep(x, 1, 2).tolist() == [[1, 5, 6, 7, 2], [1, 8, 9, 10, 2]]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_batches_are_pinned_only_on_their_way_to_a_cuda_device(device):
    """Lightning copies batches with non_blocking=True: from pinned memory only is that copy asynchronous."""
    dm = StepDataModule(RandomWindows(TOKENS, 16, 4, 0), FixedWindows(TOKENS, 16, 4, 1), batch_size=None, seed=0,
                        max_steps=3)
    assert not dm.train_dataloader().pin_memory  # no trainer
    dm.trainer = fake_trainer(device=device)
    assert dm.train_dataloader().pin_memory == dm.val_dataloader().pin_memory == (device == "cuda")


def fake_trainer(global_step=0, rank=0, world=1, device="cpu"):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), global_step=global_step,
                           global_rank=rank, world_size=world)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_resumed_train_loader_continues_the_uninterrupted_run(batch_size):
    """Resumed after optimizer step 3 of 2 micro-batches each: micro-batches 6.. of the full run; len() stays the
    whole run's, which Lightning counts the restored batches against."""
    kw = dict(batch_size=batch_size, seed=2, max_steps=5, accumulate=2)
    if batch_size is None:
        train = RandomWindows(TOKENS, 16, 4, seed=2)
    else:
        train = [{"input_ids": [i, i + 1], "labels": [i + 1, i + 2]} for i in range(20)]
        kw["collate"] = pad_collate(0)
    full = list(StepDataModule(train, train, **kw).train_dataloader())
    dm = StepDataModule(train, train, **kw)
    dm.trainer = fake_trainer(global_step=3)
    loader = dm.train_dataloader()
    got = list(loader)
    assert len(full) == len(loader) == 10 and len(got) == 4
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(got, full[6:], strict=True))


def test_each_rank_draws_its_own_windows():
    train = RandomWindows(TOKENS, 16, 4, seed=2)
    dm = StepDataModule(train, train, batch_size=None, seed=2, max_steps=3)
    dm.trainer = fake_trainer(rank=1)
    for i, b in enumerate(dm.train_dataloader()):
        assert torch.equal(b["input_ids"], RandomWindows(TOKENS, 16, 4, seed=2, rank=1)[i]["input_ids"])


def test_step_targets_count_every_rank_of_the_trainer():
    """Under DDP (world 2, faked) step_targets is the mean over both ranks' micro-batches (brute force)."""
    items = [{"input_ids": [1] * (1 + i), "labels": [-100] + [0] * i} for i in range(8)]  # id 0 is a target too
    dm = StepDataModule(items, items, batch_size=2, seed=0, max_steps=2, collate=pad_collate(5), step_targets=True)
    dm.trainer = fake_trainer(world=2)
    for step, b in enumerate(dm.train_dataloader()):
        both = [i for r in (0, 1) for i in batches(n=8, B=2, seed=0, start=0, stop=2, rank=r)[step]]
        assert b["step_targets"].tolist() == [sum(len(items[i]["labels"]) - 1 for i in both) / 2] * 2


def test_seeds_mix_their_parts_in_order():
    """seed_of(seed, epoch, rank): rank 1's first epoch is not rank 0's second."""
    assert batches(rank=1, start=0, stop=10) != batches(rank=0, start=10, stop=20)
    assert not torch.equal(RandomWindows(TOKENS, 16, 4, seed=1)[2]["input_ids"],
                           RandomWindows(TOKENS, 16, 4, seed=2)[1]["input_ids"])


def test_the_remainder_of_an_epoch_is_dropped_not_batched():
    """103 items in batches of 10: every epoch is 10 full batches, the 3 left over never a short 11th."""
    run = batches(n=103, B=10, start=0, stop=30)
    assert all(len(b) == 10 for b in run)
    assert all(len({i for b in run[e:e + 10] for i in b}) == 100 for e in (0, 10, 20))
