"""`tinylm generate` refuses bad decoding options before it loads anything (the model path here does not exist:
a check that ran after loading would fail on the path instead)."""

import pytest

from tinylm.cli import main


@pytest.mark.parametrize("args, message", [
    (["--num-beams", "0"], "--num-beams must be >= 1, got 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--temperature", "0"], "--temperature must be >= 0.01 (lower: use --decoder greedy), got 0.0"),
    (["--temperature", "1e-300"], "--temperature must be >= 0.01 (lower: use --decoder greedy), got 1e-300"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 1, got -3"),
    (["--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be > 0, got 0.0"),
    (["--repetition-penalty", "inf"], "--repetition-penalty must be > 0, got inf"),
])
def test_bad_generate_options_fail_first_naming_the_option(tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x", *args])
    assert str(e.value) == f"error: {message}"


def test_temperature_nan_is_refused_first(tmp_path):
    with pytest.raises(SystemExit, match="--temperature must be >= 0.01 .*, got nan"):
        main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x", "--temperature", "nan"])


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A tiny GPT and a classifier on a GPT backbone, saved as the training stages save them."""
    from tinylm.data.special_tokens import SPECIAL_TOKENS
    from tinylm.models import build_classifier, build_model, presets
    from tinylm.models.io import save_pretrained
    from tinylm.tokenizer import BPETokenizer

    tmp = tmp_path_factory.mktemp("models")
    tok = BPETokenizer.train(["ROMEO: But soft, what light?\n"] * 5, vocab_size=280,
                             special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.save(tmp / "tokenizer.json")
    cfg = presets("gpt2", vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    files = {"tokenizer.json": tmp / "tokenizer.json"}
    return (save_pretrained(build_model(cfg), tmp / "decoder", files),
            save_pretrained(build_classifier(cfg, 3, "last"), tmp / "classifier", files))


@pytest.mark.parametrize("decoder", ["greedy", "beam", "sample"])
def test_an_empty_raw_prompt_starts_a_document(model_dirs, capsys, decoder):
    """"" is a prompt too: the model continues from <|endoftext|>, as a new document (it crashed on a float
    tensor of no ids)."""
    main(["generate", "--model", str(model_dirs[0]), "--prompt", "", "--max-new-tokens", "3", "--decoder", decoder])
    out = capsys.readouterr().out
    if decoder == "greedy":  # the same as decoding from <|endoftext|> itself
        import torch

        from tinylm.data.special_tokens import EOS
        from tinylm.decoding.dispatch import decode
        from tinylm.models.io import load_pretrained
        from tinylm.tokenizer import BPETokenizer

        tok, model = BPETokenizer.load(model_dirs[0] / "tokenizer.json"), load_pretrained(model_dirs[0])
        eos = tok.token_to_id(EOS)
        new = decode(model, torch.tensor([[eos]]), "greedy", 3, eos_token_id=eos)[0, 1:].tolist()
        assert out == tok.decode(new[:new.index(eos)] if eos in new else new) + "\n"


def test_a_classifier_on_a_gpt_backbone_is_refused(model_dirs):
    with pytest.raises(SystemExit, match=r"holds a GPTClassifier \(gpt\); generate runs decoder language models"):
        main(["generate", "--model", str(model_dirs[1]), "--prompt", "x"])


def test_a_long_chat_prompt_keeps_its_instruction_line(model_dirs, tmp_path, capsys, monkeypatch):
    """Cut to fit the context, a chat model's prompt loses its middle, not the `<|user|>` header and first line
    (cutting from the left lost them) nor the `<|assistant|>` header the answer follows: what the model gets is
    fit_prompt's cut, as in the evaluate stage."""
    import json
    import shutil

    import tinylm.decoding.dispatch as dispatch
    from tinylm.data.chat import ChatTemplate
    from tinylm.tokenizer import BPETokenizer

    chat = shutil.copytree(model_dirs[0], tmp_path / "decoder-sft")
    config = json.loads((chat / "config.json").read_text())
    (chat / "config.json").write_text(json.dumps({**config, "chat": True}))
    seen, real = [], dispatch.decode

    def spy(model, x, *args, **kw):
        seen.append(x[0].tolist())
        return real(model, x, *args, **kw)

    monkeypatch.setattr(dispatch, "decode", spy)
    prompt = "Who speaks?\n" + "ROMEO: But soft, what light?\n" * 20
    main(["generate", "--model", str(chat), "--prompt", prompt, "--max-new-tokens", "4"])
    tok = BPETokenizer.load(chat / "tokenizer.json")
    ids = ChatTemplate.from_tokenizer(tok).prompt_ids(prompt)
    assert len(ids) > 28 and len(seen[0]) == 28  # block 32 - 4 new tokens
    text = tok.decode(seen[0])
    assert text.startswith("<|user|>\nWho speaks?\n") and text.endswith("<|assistant|>\n"), text
    assert "prompt cut to 28 of" in capsys.readouterr().err


def test_the_repetition_penalty_reaches_the_sampler(model_dirs, monkeypatch):
    import tinylm.decoding.dispatch as dispatch

    seen, real = [], dispatch.sample

    def spy(*args, **kw):
        seen.append(kw["repetition_penalty"])
        return real(*args, **kw)

    monkeypatch.setattr(dispatch, "sample", spy)
    for penalty in ([], ["--repetition-penalty", "1.3"]):
        main(["generate", "--model", str(model_dirs[0]), "--prompt", "ROMEO:", "--decoder", "sample",
              "--max-new-tokens", "4", *penalty])
    assert seen == [None, 1.3]
