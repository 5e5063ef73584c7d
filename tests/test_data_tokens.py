"""Token files: pretraining memmaps (documents separated by <|endoftext|>, uint16/uint32, meta.json) and the
tokenized SFT (shifted labels, -100 on the prompt, truncated samples dropped) and classification sets."""

import json

import datasets
import numpy as np
import pytest

from tinylm.data.chat import ChatTemplate
from tinylm.data.corpus import FEATURES, to_dataset
from tinylm.data.special_tokens import SPECIAL_TOKENS
from tinylm.data.tokens import encode_cls, encode_sft, read_tokens, token_dtype, write_pretrain
from tinylm.tokenizer import BPETokenizer

TEXT = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    BPETokenizer.train([TEXT] * 10, 300, list(SPECIAL_TOKENS), show_progress=False).save(path)
    return path


def row(doc, text):
    return {"doc": doc, "genre": "", "section": "", "text": text, "speakers": [], "speeches": []}


def test_pretrain_memmaps(tmp_path, tok_path):
    tok = BPETokenizer.load(tok_path)
    corpus = datasets.DatasetDict({
        "train": to_dataset([row("a", "Now is"), row("a", "the winter"), row("b", "of York;")], FEATURES),
        "val": to_dataset([row("c", "Made glorious")], FEATURES)})
    meta = write_pretrain(corpus, tok_path, tmp_path)
    eos = tok.token_to_id("<|endoftext|>")
    train = read_tokens(tmp_path, "train")
    assert train.dtype == np.uint16 and not train.flags.writeable
    assert train.tolist() == tok.encode("Now is\n\nthe winter") + [eos] + tok.encode("of York;") + [eos]
    assert meta == json.loads((tmp_path / "meta.json").read_text())
    assert meta["splits"] == {"train": {"tokens": len(train), "documents": 2},
                              "val": {"tokens": len(tok.encode("Made glorious")) + 1, "documents": 1}}
    assert meta["special_tokens"]["<|pad|>"] == tok.token_to_id("<|pad|>")
    assert meta["vocab_size"] == tok.vocab_size
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


@pytest.mark.parametrize("num_proc", [1, 2])
def test_special_token_strings_in_documents_are_text(tmp_path, tok_path, num_proc):
    """"<|endoftext|>" written in a document is no document boundary; "[MASK]" in it is no mask id."""
    tok = BPETokenizer.load(tok_path)
    docs = [row("d0", "Made glorious <|endoftext|> summer [MASK] here"), row("d1", "by this sun of York")]
    meta = write_pretrain(datasets.DatasetDict({"train": to_dataset(docs, FEATURES)}), tok_path, tmp_path, num_proc)
    ids = np.fromfile(tmp_path / "train.bin", dtype=meta["dtype"])
    specials = {tok.token_to_id(t): t for t in ("<|endoftext|>", "[MASK]")}
    assert [specials[i] for i in ids if i in specials] == ["<|endoftext|>"] * 2  # one after each document
    assert tok.decode(ids.tolist()).startswith("Made glorious <|endoftext|> summer [MASK] here<|endoftext|>")


def test_pretrain_memmaps_are_the_same_from_two_processes(tmp_path, tok_path):
    docs = [row(f"d{i // 3}", f"Scene {i}: " + TEXT[i * 7 % 50:][:60]) for i in range(30)]
    corpus = datasets.DatasetDict({"train": to_dataset(docs, FEATURES)})
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    assert write_pretrain(corpus, tok_path, tmp_path / "one") == write_pretrain(corpus, tok_path, tmp_path / "two", 2)
    assert (tmp_path / "one/train.bin").read_bytes() == (tmp_path / "two/train.bin").read_bytes()


def test_sft_labels_are_shifted_and_masked(tok_path):
    tmpl = ChatTemplate.from_tokenizer(BPETokenizer.load(tok_path))
    items = [{"task": "t", "doc": "d", "prompt": "Who speaks?", "response": "York"},
             {"task": "t", "doc": "d", "prompt": "Now is the winter of our discontent " * 3,
              "response": "York"}]
    sft = datasets.DatasetDict({"train": datasets.Dataset.from_list(items)})
    p, r = tmpl.prompt_ids("Who speaks?"), tmpl.response_ids("York")
    out = encode_sft(sft, tok_path, max_length=len(p) + len(r) - 1)["train"]
    assert len(out) == 1  # the long prompt leaves no response token: dropped
    item = out[0]
    assert item["input_ids"] == (p + r)[:-1] and item["prompt_ids"] == p and item["response_ids"] == r
    assert item["labels"] == [-100] * (len(p) - 1) + r
    assert item["src_ids"] == tmpl.encode("Who speaks?")
    short = encode_sft(sft, tok_path, max_length=len(p) + 1)["train"][0]  # cut inside the response
    assert short["input_ids"] == (p + r)[: len(p) + 1] and short["labels"] == [-100] * (len(p) - 1) + r[:2]


def test_cls_encoding(tok_path):
    tok = BPETokenizer.load(tok_path)
    feats = datasets.Features({"doc": datasets.Value("string"), "text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.DatasetDict({"val": to_dataset([{"doc": "x", "text": TEXT, "label": 1}], feats)})
    item = encode_cls(ds, tok_path, max_length=6)["val"][0]
    ids = tok.encode(TEXT)
    assert item["input_ids"] == [tok.token_to_id("[CLS]"), *ids[:4], tok.token_to_id("[SEP]")]
    assert item["labels"] == 1


def test_read_tokens_takes_the_dtype_from_meta(tmp_path):
    """A vocabulary over 65536 ids is stored as uint32: read back as such, not as twice as many uint16."""
    ids = np.array([0, 65536, 70_000, 2**32 - 1], dtype=np.uint32)
    ids.tofile(tmp_path / "train.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint32", "splits": {"train": {"tokens": 4}}}))
    tokens = read_tokens(tmp_path, "train")
    assert tokens.dtype == np.uint32 and tokens.tolist() == ids.tolist()


def test_sft_response_ids_are_cut_to_max_length(tok_path):
    """The encoder-decoder's target is cut like the decoder's input: to max_length."""
    tmpl = ChatTemplate.from_tokenizer(BPETokenizer.load(tok_path))
    item = {"task": "t", "doc": "d", "prompt": "Who?", "response": TEXT}
    p, r = tmpl.prompt_ids("Who?"), tmpl.response_ids(TEXT)
    out = encode_sft(datasets.DatasetDict({"train": datasets.Dataset.from_list([item])}), tok_path,
                     max_length=len(p) + 2)["train"][0]
    assert len(r) > len(p) + 2 and out["response_ids"] == r[:len(p) + 2]
