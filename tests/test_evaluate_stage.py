"""The evaluate stage's prompt fitting: a long prompt loses its middle, never its instruction line (the chat
template's `<|user|>` header and first line) nor its end (the assistant header); properties of fit_prompt
against the positions it must keep, and a real speaker prompt through a trained tokenizer. And the headline
summarize makes of its metrics: the beam width fixed in advance, not the best on the test items."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.data.chat import ChatTemplate
from tinylm.data.special_tokens import SPECIAL_TOKENS
from tinylm.evaluation.generation import fit_prompt, head_length
from tinylm.tokenizer import BPETokenizer

LINES = ["COMINIUS:", "You have holp to ravish your own daughters and", "To melt the city leads upon your pates,",
         "MENENIUS:", "What's the news? what's the news?", "Into an auger's bore."]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), room=st.integers(1, 40), head=st.integers(0, 50))
def test_fit_prompt_keeps_the_head_and_the_end(n, room, head):
    out = fit_prompt(list(range(n)), room, head)  # ids are their positions
    if n <= room:
        assert out == list(range(n))
        return
    h = min(head, room // 2)
    assert len(out) == room and out == sorted(set(out))  # room positions, in order, none twice
    assert set(range(h)) <= set(out) and set(range(n - (room - h), n)) <= set(out)


def test_fit_prompt_errors():
    with pytest.raises(ValueError, match="room >= 1"):
        fit_prompt([1, 2], 0, 1)


@pytest.fixture(scope="module")
def tok():
    text = "\n".join(["Who speaks the last lines?", *LINES]) + "\n"
    return BPETokenizer.train([text] * 5, vocab_size=300, special_tokens=list(SPECIAL_TOKENS), show_progress=False)


@pytest.mark.parametrize("seq2seq", [False, True])
def test_a_long_speaker_prompt_keeps_its_question_and_its_end(tok, seq2seq):
    tmpl = ChatTemplate.from_tokenizer(tok)
    prompt = "\n".join(["Who speaks the last lines?", *LINES * 4])
    ids = tmpl.encode(prompt) if seq2seq else tmpl.prompt_ids(prompt)
    head = head_length(tmpl, prompt, ids, seq2seq)
    assert tok.decode(ids[:head]) == ("" if seq2seq else "<|user|>\n") + "Who speaks the last lines?\n"
    room = head + 20
    out = fit_prompt(ids, room, head)
    assert len(ids) > room and out[:head] == ids[:head] and out[head:] == ids[-(room - head):]
    end = LINES[-1] if seq2seq else LINES[-1] + "\n<|assistant|>\n"
    assert tok.decode(out).endswith(end)
    if not seq2seq:  # what cutting from the left did: the user header and the question were lost
        assert not tok.decode(ids[-room:]).startswith("<|user|>")


def test_a_one_line_prompt_is_all_head(tok):
    tmpl = ChatTemplate.from_tokenizer(tok)
    ids = tmpl.prompt_ids("Who speaks?")
    assert tok.decode(ids[:head_length(tmpl, "Who speaks?", ids, False)]) == "<|user|>\nWho speaks?\n"


def test_the_headline_beam_is_the_width_fixed_in_advance_not_the_best_on_test(tmp_path):
    import json

    from tinylm.pipeline.stages.summarize import headline

    by_decoder = {"greedy": {"exact_match": 0.4}, "beam2": {"exact_match": 0.3}, "beam4": {"exact_match": 0.5}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"decoder-sft": {"tasks": {"speaker": by_decoder}}}))
    assert headline(2, tmp_path)["decoder-sft.speaker"] == {"greedy": 0.4, "beam": 0.3}
    assert headline(8, tmp_path)["decoder-sft.speaker"] == {"greedy": 0.4}  # not evaluated: a gap
