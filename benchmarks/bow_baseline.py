"""The bag-of-words baseline's regularization path on the default run's genre data: per l2 of L2_GRID,
val and test accuracy, L-BFGS evaluations and seconds (each fit warm-started from the one before, as
`fit_bow_classifier` walks it), and the time of
one objective + gradient evaluation in closed form (`loss_and_grad`, CSR) against autograd through
`objective` (COO), the peer it replaced.

    python benchmarks/bow_baseline.py        # after `make run` (reads data/tokens/cls)
"""

import time
import warnings
from pathlib import Path

import datasets
import torch

import tinylm.evaluation.baselines as bl

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    sets = datasets.load_from_disk(str(ROOT / "data" / "tokens" / "cls"))
    train, val, test = sets["train"], sets["val"], sets["test"]
    num_labels = len(set(train["labels"]))
    vocab = bl.build_vocab(train["text"])
    x, y = bl.featurize(train["text"], vocab), torch.tensor(train["labels"])
    xv, yv = bl.featurize(val["text"], vocab), torch.tensor(val["labels"])
    xt, yt = bl.featurize(test["text"], vocab), torch.tensor(test["labels"])
    print(f"{x.shape[0]} train texts, {x.shape[1]} words, {x._nnz()} non-zeros, {num_labels} labels")

    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64)
    bias = torch.zeros(num_labels, dtype=torch.float64)
    xs, xts = x.to_sparse_csr(), x.t().coalesce().to_sparse_csr()
    wt = weight.T.contiguous()
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        bl.loss_and_grad(wt, bias, xs, xts, y, 1e-4)
    ours = (time.perf_counter() - start) / runs
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    start = time.perf_counter()
    for _ in range(runs):
        torch.autograd.grad(bl.objective(w, b, x, y, 1e-4), (w, b))
    peer = (time.perf_counter() - start) / runs
    print(f"one evaluation: closed form {ours * 1e3:.1f} ms, autograd (COO) {peer * 1e3:.1f} ms, "
          f"ratio {peer / ours:.1f}x")

    print("| l2 | val acc | test acc | L-BFGS evaluations | s |\n| ---: | ---: | ---: | ---: | ---: |")
    real, calls = bl.loss_and_grad, [0]

    def counted(*args):
        calls[0] += 1
        return real(*args)

    bl.loss_and_grad = counted  # fit_logreg's closure looks it up in the module: every evaluation is counted
    fit = None
    for l2 in sorted(bl.L2_GRID, reverse=True):
        calls[0] = 0
        start = time.perf_counter()
        fit = bl.fit_logreg(x, y, num_labels, l2, init=fit)
        seconds = time.perf_counter() - start
        print(f"| {l2:g} | {bl.accuracy(xv, yv, *fit):.4f} | {bl.accuracy(xt, yt, *fit):.4f} | {calls[0]} | "
              f"{seconds:.1f} |")


if __name__ == "__main__":
    main()
