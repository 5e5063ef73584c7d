"""Greedy decoding, sampling and the stepper: against transformers' generate, KV cache against none, left
padding against decoding alone, seeds, filters against brute force, the encoder-decoder path, errors."""

import pytest
import torch
from transformers.utils import logging as hf_logging

from tinylm.decoding import beam_search, greedy_decode, sample, top_k_filter, top_p_filter
from tinylm.interop.hf import to_hf
from tinylm.models import build_model, presets

hf_logging.set_verbosity_error()
EOS, PAD, START = 3, 1, 2


def tiny_gpt(vocab_size: int = 60, eos_bias: float = 2.0, eos_drift: float = 3.0, seed: int = 0):
    """A 2-layer gpt2-preset model with peaked next-token distributions (embeddings x8: no near-ties) where
    EOS is likely and grows likelier with the position (EOS's direction added to ln_f's bias and, growing,
    to the position embeddings), so that greedy rows end at different steps."""
    torch.manual_seed(seed)
    model = build_model(presets("gpt2", vocab_size=vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        model.transformer.wte.weight.mul_(8.0)
        w = model.transformer.wte.weight[EOS]
        model.transformer.ln_f.bias.add_(eos_bias * w / w.square().sum())
        model.transformer.wpe.weight.add_(torch.linspace(0, eos_drift, 64)[:, None] * w / w.norm())
    return model.eval()


def tiny_seq2seq(vocab_size: int = 40, eos_bias: float = 3.0, seed: int = 0):
    """A 2-layer encoder-decoder with EOS made likely through the last decoder norm's bias. Its embedding is
    redrawn at N(0, 0.02): at the default N(0, 1/d) an untrained tied model echoes its input token forever,
    and the decoding tests need hypotheses that differ and end."""
    torch.manual_seed(seed)
    cfg = presets("transformer", vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = build_model(cfg)
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 0.02)
        w = model.embed.weight[EOS]
        model.decoder[-1].ln_2.bias.add_(eos_bias * w / w.square().sum())
    return model.eval()


def padded(lengths: list[int], vocab_size: int, seed: int = 1, left: bool = True):
    """Random prompts (no EOS/PAD/START inside) of the given lengths, padded with PAD: (ids, mask).
    Decoder-only prompts are left-padded; encoder-decoder sources right-padded (its positions start at 0)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(4, vocab_size, (len(lengths), T), generator=g)
    mask = (torch.arange(T) >= T - torch.tensor(lengths)[:, None]).long()
    if not left:
        mask = mask.flip(1)
    return ids.masked_fill(mask == 0, PAD), mask


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt()


@pytest.fixture(scope="module")
def hf(gpt):
    return to_hf(gpt)


@pytest.mark.parametrize("lengths", [[6, 6, 6], [7, 3, 5, 7, 1]])
def test_greedy_matches_transformers(gpt, hf, lengths):
    ids, mask = padded(lengths, 60)
    ours = greedy_decode(gpt, ids, 20, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=EOS,
                         pad_token_id=PAD)
    assert torch.equal(ours, theirs)
    assert (ours[:, ids.size(1):] == EOS).any(), "the test needs some rows to end with EOS"


def test_baichuan_preset_matches_transformers_llama():
    """RoPE positions from the mask, grouped-query attention: greedy and beam equal LlamaForCausalLM's."""
    torch.manual_seed(0)
    cfg = presets("baichuan", vocab_size=60, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(8.0)
    llama = to_hf(model)
    ids, mask = padded([7, 3, 5, 1], 60)
    kw = dict(eos_token_id=EOS, pad_token_id=PAD, do_sample=False)
    greedy = greedy_decode(model, ids, 12, attention_mask=mask, eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(greedy, llama.generate(ids, attention_mask=mask, max_new_tokens=12, **kw))
    seqs, scores = beam_search(model, ids, 3, 12, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD,
                               num_return_sequences=2)
    out = llama.generate(ids, attention_mask=mask, max_new_tokens=12, num_beams=3, num_return_sequences=2,
                         output_scores=True, return_dict_in_generate=True, **kw)
    assert torch.equal(seqs, out.sequences)
    torch.testing.assert_close(scores, out.sequences_scores, atol=1e-4, rtol=0)


def test_padded_rows_decode_as_alone(gpt):
    ids, mask = padded([7, 2, 5], 60)
    batch = greedy_decode(gpt, ids, 12, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD)
    for row, n in enumerate(mask.sum(1).tolist()):
        alone = greedy_decode(gpt, ids[row:row + 1, -n:], 12, eos_token_id=EOS, pad_token_id=PAD)[0, n:]
        new = batch[row, ids.size(1):]
        assert torch.equal(new[:len(alone)], alone) and (new[len(alone):] == PAD).all()


def decode_all_ways(model, ids, mask, use_cache):
    """greedy, seeded sampling and beam search outputs (with EOS) for one model and batch."""
    kw = dict(eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD, decoder_start_token_id=START,
              use_cache=use_cache)
    return [greedy_decode(model, ids, 10, **kw),
            sample(model, ids, 10, temperature=1.5, top_k=30, top_p=0.95, repetition_penalty=1.2, seed=7,
                   **kw),
            *beam_search(model, ids, 3, 10, num_return_sequences=2, **kw)]


@pytest.mark.parametrize("kind", ["gpt", "alibi", "seq2seq"])
def test_kv_cache_equals_no_cache(gpt, kind):
    model = {"gpt": lambda: gpt, "seq2seq": tiny_seq2seq,
             "alibi": lambda: build_model(presets("baichuan", vocab_size=60, block_size=64, n_layer=2, n_head=4,
                                                  n_embd=32, position="alibi")).eval()}[kind]()
    ids, mask = padded([6, 2, 4], model.config.vocab_size, left=kind != "seq2seq")
    cached, uncached = decode_all_ways(model, ids, mask, True), decode_all_ways(model, ids, mask, False)
    for a, b in zip(cached[:3], uncached[:3], strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(cached[3], uncached[3], atol=1e-4, rtol=0)


def test_kv_cache_feeds_one_token_per_step(gpt, monkeypatch):
    seen = []
    forward = type(gpt).forward
    monkeypatch.setattr(type(gpt), "forward",
                        lambda self, ids, **kw: seen.append(ids.size(1)) or forward(self, ids, **kw))
    ids, mask = padded([5, 3], 60)
    greedy_decode(gpt, ids, 8, attention_mask=mask)
    beam_search(gpt, ids, 3, 8, attention_mask=mask)
    assert seen == [5] + [1] * 7 + [5] + [1] * 7


@pytest.mark.parametrize("early_stopping", [False, True])
def test_greedy_equals_one_beam(gpt, early_stopping):
    ids, mask = padded([7, 3, 5, 7, 1], 60)
    greedy = greedy_decode(gpt, ids, 15, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD)
    beam, _ = beam_search(gpt, ids, 1, 15, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD,
                          early_stopping=early_stopping)
    assert torch.equal(greedy, beam)


def test_sample_with_top_k_1_is_greedy(gpt):
    ids, mask = padded([6, 2, 4], 60)
    kw = dict(eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD)
    sampled = sample(gpt, ids, 12, top_k=1, temperature=3.0, seed=0, **kw)
    assert torch.equal(sampled, greedy_decode(gpt, ids, 12, **kw))


def test_sample_matches_transformers(gpt, hf):
    """Same processors in the same order, same draws from torch's global RNG: the same tokens."""
    ids, _ = padded([6, 6, 6, 6], 60)
    kw = dict(temperature=0.8, top_k=25, top_p=0.9, repetition_penalty=1.3, eos_token_id=EOS,
              pad_token_id=PAD)
    torch.manual_seed(123)
    ours = sample(gpt, ids, 15, **kw)
    torch.manual_seed(123)
    theirs = hf.generate(ids, max_new_tokens=15, do_sample=True, **kw)
    assert torch.equal(ours, theirs)


def test_repetition_penalty_ignores_prompt_padding(gpt):
    """Padding holds the token each row would repeat first: penalising it would change the row's output."""
    ids, mask = padded([6, 3], 60)
    kw = dict(top_k=1, repetition_penalty=5.0)
    alone = [sample(gpt, ids[row:row + 1, -n:], 8, **kw)[0, n:] for row, n in enumerate(mask.sum(1).tolist())]
    ids = torch.where(mask.bool(), ids, torch.stack([a[0] for a in alone])[:, None])
    batch = sample(gpt, ids, 8, attention_mask=mask, **kw)[:, ids.size(1):]
    assert torch.equal(batch, torch.stack(alone))


def test_sampling_is_deterministic_by_seed(gpt):
    ids, mask = padded([6, 2, 4], 60)
    kw = dict(temperature=2.0, attention_mask=mask)
    a, b = sample(gpt, ids, 12, seed=5, **kw), sample(gpt, ids, 12, seed=5, **kw)
    assert torch.equal(a, b)
    assert torch.equal(a, sample(gpt, ids, 12, generator=torch.Generator().manual_seed(5), **kw))
    assert not torch.equal(a, sample(gpt, ids, 12, seed=6, **kw))


def test_top_p_filter_matches_brute_force():
    logits = torch.randn(20, 30, generator=torch.Generator().manual_seed(0)) * 2
    for p in (0.05, 0.3, 0.5, 0.9, 0.999, 1.0):
        kept = top_p_filter(logits, p) > float("-inf")
        for row in range(logits.size(0)):
            probs = logits[row].softmax(-1).tolist()
            expected, mass = set(), 0.0
            for token in sorted(range(30), key=lambda j: -probs[j]):  # most likely first, until mass >= p
                expected.add(token)
                mass += probs[token]
                if mass >= p:
                    break
            assert set(kept[row].nonzero().flatten().tolist()) == expected


@pytest.mark.parametrize(("top_p", "kept"), [(0.25, 2), (0.5, 4), (0.75, 6), (0.8, 7)])
def test_top_p_filter_keeps_the_tokens_whose_mass_first_reaches_p_exactly(top_p, kept):
    """Eight equal logits: probabilities of exactly 1/8 (cumulative 0.125, 0.25, ...); a token joins while the
    mass before it is below p, so mass exactly p stops the set, as transformers' TopPLogitsWarper does."""
    from transformers import TopPLogitsWarper

    logits = torch.zeros(1, 8)
    ours = (top_p_filter(logits, top_p) > float("-inf")).sum().item()
    theirs = (TopPLogitsWarper(top_p)(None, logits) > float("-inf")).sum().item()
    assert ours == theirs == kept


def test_finished_rows_repeat_eos_without_a_pad_id(gpt, hf):
    """pad_token_id=None: a row that emitted EOS goes on emitting EOS (transformers with pad = EOS)."""
    ids, _ = padded([6, 6, 6], 60)
    theirs = hf.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
    for ours in (greedy_decode(gpt, ids, 20, eos_token_id=EOS), sample(gpt, ids, 20, top_k=1, eos_token_id=EOS)):
        assert torch.equal(ours, theirs)
        new = ours[:, ids.size(1):]
        after_eos = (new == EOS).long().cummax(1).values.bool()
        assert after_eos[:, -1].all() and (new[after_eos] == EOS).all(), "every row must end in EOS"


def test_top_k_filter_keeps_the_k_largest():
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    kept = top_k_filter(logits, 4) > float("-inf")
    assert torch.equal(kept, torch.zeros_like(kept).scatter(1, logits.topk(4).indices, True))
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_seq2seq_batch_with_source_padding_decodes_as_alone():
    model = tiny_seq2seq()
    src, mask = padded([6, 2, 4], 40, left=False)
    batch = greedy_decode(model, src, 10, eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD,
                          decoder_start_token_id=START)
    assert (batch[:, 0] == START).all() and (batch == EOS).any()
    for row, n in enumerate(mask.sum(1).tolist()):
        alone = greedy_decode(model, src[row:row + 1, :n], 10, eos_token_id=EOS, pad_token_id=PAD,
                              decoder_start_token_id=START)[0]
        assert torch.equal(batch[row, :len(alone)], alone) and (batch[row, len(alone):] == PAD).all()


@pytest.mark.parametrize("call, message", [
    (lambda m, x: beam_search(m, x, 0, 5), "num_beams"),
    (lambda m, x: beam_search(m, x, 2, 5, num_return_sequences=3), "num_return_sequences"),
    (lambda m, x: beam_search(m, x, 2, 5, early_stopping="sometimes"), "early_stopping"),
    (lambda m, x: beam_search(m, x, 2, 5, length_penalty_type="linear"), "length_penalty_type"),
    (lambda m, x: sample(m, x, 5, top_p=0.0), "top_p"),
    (lambda m, x: sample(m, x, 5, top_p=1.5), "top_p"),
    (lambda m, x: sample(m, x, 5, temperature=0.0), "temperature"),
    (lambda m, x: sample(m, x, 5, top_k=0), "top_k"),
    (lambda m, x: greedy_decode(m, x, 0), "max_new_tokens"),
    (lambda m, x: greedy_decode(m, x, 61), "block_size=64"),
    (lambda m, x: greedy_decode(m, x, 5, attention_mask=torch.tensor([[1, 1, 1, 0]])), "left-padded"),
    (lambda m, x: greedy_decode(tiny_seq2seq(), x, 5), "decoder_start_token_id"),
])
def test_bad_arguments_raise(gpt, call, message):
    with pytest.raises(ValueError, match=message):
        call(gpt, torch.tensor([[5, 6, 7, 8]]))


def test_decode_dispatches_by_name(gpt):
    from tinylm.decoding.dispatch import decode

    ids, mask = padded([5, 3], 60)
    kw = dict(eos_token_id=EOS, attention_mask=mask, pad_token_id=PAD)
    assert torch.equal(decode(gpt, ids, "greedy", 6, **kw), greedy_decode(gpt, ids, 6, **kw))
    assert torch.equal(decode(gpt, ids, "beam3", 6, length_penalty=0.5, **kw),
                       beam_search(gpt, ids, 3, 6, length_penalty=0.5, **kw)[0])
    got = decode(gpt, ids, "sample", 6, temperature=0.7, top_p=0.9, seed=4, **kw)
    assert torch.equal(got, sample(gpt, ids, 6, temperature=0.7, top_p=0.9, seed=4, **kw))
    for bad in ("beam", "beam0", "nucleus"):
        with pytest.raises(ValueError, match="unknown decoder"):
            decode(gpt, ids, bad, 6, **kw)
