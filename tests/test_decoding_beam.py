"""Beam search: equal to exhaustive search when K >= V^T (where the stopping rule is exact), and equal to
transformers' generate(num_beams=K) across beam counts, length penalties and early-stopping modes."""

import itertools

import pytest
import torch
from test_decoding import EOS, PAD, START, padded, tiny_gpt, tiny_seq2seq

from tinylm.decoding import beam_search
from tinylm.interop.hf import to_hf

V, T = 5, 3  # exhaustive search: V^T = 125 continuations


def continuation_logprobs(model, prompt: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """log p(seqs[:, i] | prompt, seqs[:, :i]) (N, T) from one full forward pass over every continuation."""
    if hasattr(model, "encode"):
        tgt = torch.cat([torch.full((len(seqs), 1), START), seqs[:, :-1]], dim=1)
        logits = model(prompt.expand(len(seqs), -1), tgt)
    else:
        logits = model(torch.cat([prompt.expand(len(seqs), -1), seqs], dim=1))[:, len(prompt) - 1:-1]
    return torch.log_softmax(logits.double(), -1).gather(-1, seqs[..., None]).squeeze(-1)


def exhaustive(model, prompt, eos, lp) -> list[tuple[tuple[int, ...], float]]:
    """Every hypothesis (ends with EOS, or has T tokens) with its score sum log p / lp(length), best first."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=T)))
    hyps = {}
    for seq, logp in zip(seqs.tolist(), continuation_logprobs(model, prompt, seqs).tolist(), strict=True):
        for n in range(1, T + 1):
            if seq[n - 1] == eos or n == T:
                hyps[tuple(seq[:n])] = sum(logp[:n]) / lp(n)
                break
    return sorted(hyps.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("kind", ["gpt", "seq2seq"])
@pytest.mark.parametrize("eos", [None, EOS])
@pytest.mark.parametrize("length_penalty, early_stopping, penalty_type", [
    (1.0, "never", "power"), (2.0, "never", "power"), (0.0, False, "power"), (-1.0, False, "power"),
    (0.6, "never", "gnmt"),
])
def test_beam_with_k_at_least_v_pow_t_is_exhaustive(kind, eos, length_penalty, early_stopping, penalty_type):
    """With K >= V^T nothing is pruned; the stopping rule is exact for "never" and for length_penalty <= 0."""
    model = tiny_gpt(vocab_size=V, eos_drift=0.0) if kind == "gpt" else tiny_seq2seq(V, eos_bias=0.25)
    if penalty_type == "power":
        def lp(n):
            return n ** length_penalty
    else:
        def lp(n):
            return ((5 + n) / 6) ** length_penalty
    ids, mask = padded([4, 2], 60, seed=3, left=kind == "gpt")
    ids = ids % V
    n_best = 4
    seqs, scores = beam_search(model, ids, V ** T, T, eos_token_id=eos, length_penalty=length_penalty,
                               early_stopping=early_stopping, attention_mask=mask,
                               num_return_sequences=n_best, pad_token_id=PAD,
                               length_penalty_type=penalty_type, decoder_start_token_id=START)
    prompt_len = 1 if kind == "seq2seq" else ids.size(1)
    for row, n in enumerate(mask.sum(1).tolist()):
        expected = exhaustive(model, ids[row, -n:] if kind == "gpt" else ids[row, :n], eos, lp)[:n_best]
        assert eos is None or any(EOS in hyp for hyp, _ in expected), "the test needs EOS among the best"
        for i, (hyp, score) in enumerate(expected):
            got = seqs[row * n_best + i, prompt_len:].tolist()
            assert got[:len(hyp)] == list(hyp) and all(t == PAD for t in got[len(hyp):])
            assert scores[row * n_best + i].item() == pytest.approx(score, abs=1e-4)


@pytest.fixture(scope="module")
def gpt_and_hf():
    model = tiny_gpt()
    return model, to_hf(model)


@pytest.mark.parametrize("num_beams, num_return_sequences", [(2, 1), (4, 3), (5, 1)])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
@pytest.mark.parametrize("early_stopping", [False, True, "never"])
def test_beam_matches_transformers(gpt_and_hf, num_beams, num_return_sequences, length_penalty,
                                   early_stopping):
    model, hf = gpt_and_hf
    ids, mask = padded([7, 3, 5, 1], 60, seed=2)
    kw = dict(eos_token_id=EOS, length_penalty=length_penalty, early_stopping=early_stopping,
              num_return_sequences=num_return_sequences, pad_token_id=PAD)
    seqs, scores = beam_search(model, ids, num_beams, 16, attention_mask=mask, **kw)
    out = hf.generate(ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=16, do_sample=False,
                      output_scores=True, return_dict_in_generate=True, **kw)
    assert torch.equal(seqs, out.sequences)
    torch.testing.assert_close(scores, out.sequences_scores, atol=1e-4, rtol=0)
    assert (seqs[:, ids.size(1):] == EOS).any(), "the test needs hypotheses ending with EOS"


def test_early_stopping_modes_differ_on_the_compared_batch(gpt_and_hf):
    """So that the comparison above tells the modes apart: "never" searches on and finds better hypotheses."""
    ids, mask = padded([7, 3, 5, 1], 60, seed=2)
    runs = {es: beam_search(gpt_and_hf[0], ids, 2, 16, eos_token_id=EOS, length_penalty=2.0,
                            early_stopping=es, attention_mask=mask, pad_token_id=PAD)
            for es in (False, True, "never")}
    assert runs[True][0].size(1) < runs[False][0].size(1)
    assert (runs["never"][1] >= runs[False][1]).all() and (runs["never"][1] > runs[False][1]).any()


def test_beam_without_eos_runs_to_max_new_tokens(gpt_and_hf):
    model, hf = gpt_and_hf
    ids, mask = padded([6, 2], 60)
    seqs, scores = beam_search(model, ids, 3, 9, attention_mask=mask, num_return_sequences=3)
    out = hf.generate(ids, attention_mask=mask, num_beams=3, max_new_tokens=9, do_sample=False,
                      pad_token_id=PAD, num_return_sequences=3, output_scores=True,
                      return_dict_in_generate=True)
    assert seqs.shape == (6, ids.size(1) + 9) and torch.equal(seqs, out.sequences)
    torch.testing.assert_close(scores, out.sequences_scores, atol=1e-4, rtol=0)
    assert (scores.view(2, 3).diff(dim=1) <= 0).all()  # best first within each item
