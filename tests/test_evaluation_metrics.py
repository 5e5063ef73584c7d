"""Exact match, classifier predictions and hits, prediction shares, the best candidate (summed or per token)
and the majority class (against brute force), and the prompt's room in the context; perplexity and masked-LM
accuracy against stub models with known answers and against brute force."""

import math
import string
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tinylm.data.masking import mask_tokens
from tinylm.data.windows import FixedWindows, with_cls_sep
from tinylm.evaluation.generation import prompt_room
from tinylm.evaluation.metrics import (
    best_candidate,
    classifier_hits,
    classifier_predictions,
    exact_match,
    majority_label,
    mlm_accuracy,
    normalize,
    perplexity,
    prediction_shares,
)

PAD = 0


class BagClassifier(torch.nn.Module):
    """Logits from the sum of the unpadded token embeddings: padding must not change a prediction."""

    def __init__(self, vocab: int, labels: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, labels)

    def forward(self, ids, mask):  # (B, T), (B, T) -> (B, labels)
        return (self.emb(ids) * mask[..., None]).sum(1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 19), min_size=1, max_size=7), min_size=1, max_size=9),
       st.integers(1, 4), st.integers(0, 10_000))
def test_classifier_predictions_and_hits_match_one_item_at_a_time(seqs, batch_size, seed):
    torch.manual_seed(seed)
    model = BagClassifier(20, 3)
    rows = [{"input_ids": s, "labels": i % 3} for i, s in enumerate(seqs)]
    alone = [int(model(torch.tensor([r["input_ids"]]), torch.ones(1, len(r["input_ids"]))).argmax()) for r in rows]
    assert classifier_predictions(model, rows, PAD, batch_size) == alone
    assert classifier_hits(model, rows, PAD, batch_size) == [int(p == i % 3) for i, p in enumerate(alone)]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40))
def test_prediction_shares_count_every_class(preds):
    shares = prediction_shares(preds, ["comedy", "history", "roman", "tragedy"])
    counts = Counter(preds)
    assert shares == {name: counts[c] / len(preds) for c, name in enumerate(["comedy", "history", "roman", "tragedy"])}
    assert sum(shares.values()) == pytest.approx(1.0)


@given(st.lists(st.tuples(st.floats(-50, 0), st.integers(1, 6)), min_size=1, max_size=8))
def test_best_candidate_by_sum_and_per_token(cands):
    scores, lengths = [c[0] for c in cands], [c[1] for c in cands]
    assert best_candidate(scores) == min(range(len(cands)), key=lambda c: (-scores[c], c))
    assert best_candidate(scores, lengths) == min(range(len(cands)), key=lambda c: (-scores[c] / lengths[c], c))


def test_per_token_scoring_does_not_favour_the_shortest_name():
    assert best_candidate([-3.0, -4.0]) == 0 and best_candidate([-3.0, -4.0], [1, 4]) == 1
    with pytest.raises(ValueError, match="one positive length each"):
        best_candidate([-1.0], [0])


def test_prediction_shares_errors():
    with pytest.raises(ValueError, match="class id below 2"):
        prediction_shares([0, 2], ["a", "b"])
    with pytest.raises(ValueError, match="needs predictions"):
        prediction_shares([], ["a"])


@given(st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_majority_label_is_the_most_frequent_lowest_on_ties(labels):
    counts = [labels.count(k) for k in range(5)]
    assert majority_label(labels, 5) == counts.index(max(counts))


def test_prompt_room():
    assert prompt_room(64, 16) == 48 and prompt_room(64, 63) == 1
    with pytest.raises(ValueError, match="max_new_tokens=64 leaves no room for a prompt in the context of 64"):
        prompt_room(64, 64)


def _tiny_gpt():
    from tinylm.models import build_model, presets

    torch.manual_seed(0)
    return build_model(presets("gpt2", vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 39), min_size=1, max_size=8),
       st.lists(st.lists(st.integers(1, 39), min_size=1, max_size=6), min_size=1, max_size=5))
def test_candidate_logprobs_score_each_candidate_alone(prompt, candidates):
    """Batched and right-padded equals one candidate at a time, which equals the brute-force sum of
    log p(y_t | prompt, y_<t) from a fresh forward pass per token."""
    from tinylm.evaluation.metrics import candidate_logprobs, sequence_logprob

    model = _tiny_gpt()
    alone = [sequence_logprob(model, prompt, c) for c in candidates]
    assert candidate_logprobs(model, prompt, candidates) == pytest.approx(alone, abs=1e-4)
    with torch.no_grad():
        brute = [sum(torch.log_softmax(model(torch.tensor([prompt + c[:t]]))[0, -1], -1)[c[t]].item()
                     for t in range(len(c))) for c in candidates]
    assert alone == pytest.approx(brute, abs=1e-4)
    with pytest.raises(ValueError, match="non-empty"):
        candidate_logprobs(model, prompt, [[]])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.punctuation + string.whitespace, max_size=20))
def test_normalize_is_idempotent_and_ignores_surrounding_whitespace_and_punctuation(s):
    n = normalize(s)
    assert normalize(n) == n
    assert normalize(f" \t{s}.\n!") == n and n == n.lower()
    assert not n or (n[0] not in string.punctuation + string.whitespace and n[-1] not in string.punctuation)


def test_exact_match():
    assert exact_match(["Paris.\t.", "rome", "x"], ["paris", "Rome!", "y"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no references"):
        exact_match([], [])


class Stub:
    """A model whose logits are logits(ids) (B, T) -> (B, T, V), with a config of block_size and vocab_size."""

    def __init__(self, block_size: int, vocab_size: int, logits):
        self.config, self.logits = SimpleNamespace(block_size=block_size, vocab_size=vocab_size), logits

    def __call__(self, ids):
        return self.logits(ids)


def one_hot(block_size: int, vocab_size: int, answer=lambda ids: ids) -> Stub:
    return Stub(block_size, vocab_size, lambda ids: F.one_hot(answer(ids), vocab_size).float())


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    """Perplexity is exp of the mean cross-entropy per token: a model uniform over V tokens scores exactly V."""
    tokens = np.random.default_rng(0).integers(0, 13, 300)
    uniform = Stub(16, 13, lambda ids: torch.zeros(*ids.shape, 13))
    assert perplexity(uniform, tokens, batch_size=4, n_batches=3) == pytest.approx(13, rel=1e-6)


def test_perplexity_is_exp_of_the_mean_token_cross_entropy_over_the_windows():
    """A real GPT: exp(mean over the evaluated windows of each window's mean next-token cross-entropy)."""
    model, tokens = _tiny_gpt(), np.random.default_rng(1).integers(0, 40, 400)
    windows = FixedWindows(tokens, 32, 3, 2)
    with torch.no_grad():
        per_window = [F.cross_entropy(model(x[None])[0], y).item() for b in windows
                      for x, y in zip(b["input_ids"], b["labels"], strict=True)]
    assert len(per_window) == 6
    assert perplexity(model, tokens, batch_size=3, n_batches=2) == pytest.approx(math.exp(np.mean(per_window)),
                                                                                 rel=1e-5)


MLM = dict(cls_id=1, sep_id=2, mask_id=3, special_ids=[0, 1, 2, 3], batch_size=4, n_batches=3, seed=5)


def test_mlm_accuracy_is_the_share_of_masked_positions_predicted():
    """Accuracy counts the chosen (masked) positions only: an oracle of the uncorrupted ids scores exactly 1,
    a model echoing its corrupted input scores the share of chosen positions left (or redrawn) as the original."""
    tokens = np.random.default_rng(2).integers(4, 30, 500)
    clean = iter([with_cls_sep(b["input_ids"], 1, 2) for b in FixedWindows(tokens, 14, 4, 3)])
    assert mlm_accuracy(one_hot(16, 30, lambda ids: next(clean)), tokens, **MLM) == 1.0
    g, same, chosen = torch.Generator().manual_seed(MLM["seed"]), 0, 0
    for b in FixedWindows(tokens, 14, 4, 3):
        inputs, labels = mask_tokens(with_cls_sep(b["input_ids"], 1, 2), mask_token_id=3,
                                     special_ids=torch.tensor([0, 1, 2, 3]), vocab_size=30, generator=g)
        for i, lab in zip(inputs.flatten().tolist(), labels.flatten().tolist(), strict=True):
            chosen, same = chosen + (lab != -100), same + (lab != -100 and i == lab)
    assert chosen > 0 and 0 < same < chosen
    assert mlm_accuracy(one_hot(16, 30), tokens, **MLM) == same / chosen


def _tiny_bert_classifier():
    from tinylm.models import BertClassifier, presets

    torch.manual_seed(0)
    model = BertClassifier(presets("bert", vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16), 5, "cls")
    with torch.no_grad():  # larger weights than BERT's init, under which every input predicts the same class
        for m in model.modules():
            if isinstance(m, torch.nn.Linear | torch.nn.Embedding):
                m.weight.normal_(0, 0.5)
    return model.eval()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.integers(4, 19), min_size=0, max_size=10), min_size=1, max_size=6), st.integers(1, 4))
@example([[5], [6, 7, 8, 9, 10, 11, 12, 13], [14, 15], [16, 17, 18, 19, 4, 5]], 4)
def test_classifier_predictions_of_a_cls_pooled_bert_match_one_item_at_a_time(bodies, batch_size):
    """Batches are right-padded: [CLS] stays at position 0 of every row, so a padded batch predicts what each
    row predicts alone, unpadded (a position-aware model, unlike BagClassifier)."""
    model = _tiny_bert_classifier()
    rows = [{"input_ids": [1, *body, 2]} for body in bodies]
    with torch.no_grad():
        alone = [int(model(torch.tensor([r["input_ids"]]), torch.ones(1, len(r["input_ids"]))).argmax())
                 for r in rows]
    assert classifier_predictions(model, rows, PAD, batch_size) == alone
