"""A bag-of-words logistic-regression text classifier: the baseline a learned encoder has to beat.

Features: the lower-cased words (`\\w+` runs, apostrophes kept inside words) of each text that occur in at
least `min_count` training texts, as x_j = log(1 + count_j), each text's vector scaled to unit L2 norm.
Model: multinomial logistic regression p(y | x) = softmax(W x + b), fit by L-BFGS (float64, full batch) on

    L(W, b) = mean_i -log p(y_i | x_i) + l2 / 2 * ||W||^2        (b not penalized)

which is strictly convex in W (and convex in b), so the fit is the unique minimum the gradient vanishes at
(the tests check that). With P_i = softmax(W x_i + b) and Y_i the one-hot label, the gradient is

    dL/dW = sum_i (P_i - Y_i) x_i^T / N + l2 W,    dL/db = sum_i (P_i - Y_i) / N

computed in closed form (`loss_and_grad`, checked against autograd of `objective`). `fit_bow_classifier`
walks `L2_GRID` from the strongest penalty down, each fit warm-started from the one before (the path of
minima; a few hundred L-BFGS evaluations each instead of thousands from zeros), keeps the l2 most accurate
on a validation split (ties: the stronger penalty). It walks the whole grid: validation accuracy along
the path is noisy (a 400-item split from a few scenes), and stopping at its first fall picked l2 = 1e-2,
test accuracy 0.23, where the grid's best val pick reached 0.38 (2-line passages; BENCHMARKS.md). The grid
reaches far enough that the best l2 is interior, not its weakest end. Texts are few words each, so the
features are a sparse (N, V) matrix.
"""

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WORD = re.compile(r"\w+(?:'\w+)*")
L2_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class BowClassifier:
    vocab: dict[str, int]
    weight: torch.Tensor  # (C, V)
    bias: torch.Tensor  # (C,)
    l2: float

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        return featurize(texts, self.vocab)

    def predict(self, texts: Sequence[str]) -> list[int]:
        return logits(self.features(texts), self.weight, self.bias).argmax(-1).tolist()


def build_vocab(texts: Sequence[str], min_count: int = 2) -> dict[str, int]:
    """Words occurring in at least min_count texts, in sorted order."""
    df = Counter(w for t in texts for w in set(words(t)))
    return {w: i for i, w in enumerate(sorted(w for w, c in df.items() if c >= min_count))}


def featurize(texts: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    """Sparse (N, V) float64: log(1 + word counts), each row scaled to unit L2 norm (empty rows stay zero)."""
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        counts = Counter(vocab[w] for w in words(t) if w in vocab)
        v = torch.log1p(torch.tensor(list(counts.values()), dtype=torch.float64))
        rows += [i] * len(counts)
        cols += list(counts)
        vals.append(v / v.norm() if len(counts) else v)
    values = torch.cat(vals) if vals else torch.zeros(0, dtype=torch.float64)
    return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1), values,
                                   (len(texts), len(vocab)), check_invariants=True).coalesce()


def logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(x, weight.T) + bias  # (N, C)


def accuracy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    return float((logits(x, weight, bias).argmax(-1) == y).double().mean())


def objective(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    return F.cross_entropy(logits(x, weight, bias), y) + l2 / 2 * weight.square().sum()


def loss_and_grad(weight_t: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, xt: torch.Tensor, y: torch.Tensor,
                  l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(`objective`, dL/dW^T (V, C), dL/db (C,)) at W^T = weight_t (V, C); x (N, V) and xt = x^T (V, N) sparse CSR.
    Works on the (C, N) logits so the softmax over C runs along contiguous rows of N."""
    n = y.shape[0]
    rows = torch.arange(n)
    z = (x @ weight_t).T + bias[:, None]  # (C, N)
    top = z.amax(0)
    p = (z - top).exp_()
    total = p.sum(0)
    loss = (top + total.log() - z[y, rows]).mean() + l2 / 2 * weight_t.square().sum()
    p /= total  # softmax, (C, N)
    p[y, rows] -= 1
    p /= n  # dL/dz
    return loss, xt @ p.T.contiguous() + l2 * weight_t, p.sum(1)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float, max_iter: int = 5000,
               init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, V), b (C,)) minimizing `objective` by full-batch L-BFGS (float64) from init (W, b), or from zeros;
    deterministic (no randomness anywhere)."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 (got {l2}): without a penalty separable data has no minimum")
    x = x.coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul with a dense matrix is all we use
        warnings.simplefilter("ignore", UserWarning)
        xs, xts = x.to_sparse_csr(), x.t().coalesce().to_sparse_csr()
    weight, bias = init or (torch.zeros(num_labels, x.shape[1], dtype=torch.float64),
                            torch.zeros(num_labels, dtype=torch.float64))
    weight_t = weight.T.contiguous().requires_grad_(True)  # (V, C): the layout the sparse products want
    bias = bias.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([weight_t, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        loss, weight_t.grad, bias.grad = loss_and_grad(weight_t.detach(), bias.detach(), xs, xts, y, l2)
        return loss

    opt.step(closure)
    return weight_t.detach().T.contiguous(), bias.detach()


def fit_bow_classifier(train_texts: Sequence[str], train_labels: Sequence[int], val_texts: Sequence[str],
                       val_labels: Sequence[int], num_labels: int, min_count: int = 2) -> BowClassifier:
    """The classifier whose l2 is most accurate on the validation split, along the warm-started path of
    the whole L2_GRID (the module doc)."""
    if not train_texts or not val_texts:
        raise ValueError("the bag-of-words baseline needs training and validation texts (got an empty split)")
    vocab = build_vocab(train_texts, min_count)
    x, y = featurize(train_texts, vocab), torch.tensor(list(train_labels))
    xv, yv = featurize(val_texts, vocab), torch.tensor(list(val_labels))
    best, fit = None, None
    for l2 in sorted(L2_GRID, reverse=True):
        fit = fit_logreg(x, y, num_labels, l2, init=fit)
        acc = accuracy(xv, yv, *fit)
        if best is None or acc > best[0]:
            best = (acc, BowClassifier(vocab, *fit, l2))
    return best[1]
