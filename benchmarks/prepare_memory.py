"""Peak memory of the prepare stage's corpus building against Hugging Face `datasets`' own JSON loader.

    python benchmarks/prepare_memory.py                   # 50k and 200k documents (about 165 and 660 MB of JSONL)
    python benchmarks/prepare_memory.py --docs 100000 400000

A synthetic JSONL corpus (documents of 500 random words from a 5000-word vocabulary, a label each) per size.
Each measurement runs in a fresh process that samples its own anonymous resident memory (RssAnon of
/proc/self/status, every 5 ms) and reports the peak less the figure after its imports ("working"): what the data
costs in memory that cannot be given back. Pages of memory-mapped Arrow files are file-backed (the kernel drops
them under pressure), so they are left out; total peak RSS (ru_maxrss, which counts them) is shown too:
- tinylm: `build_corpus(raw, cfg, workdir)` (rows streamed to one Arrow file, the split chosen by hashed unit
  ids) and `save_to_disk` of the three splits, as `pipelines/prepare.py` runs it;
- datasets: `load_dataset("json", data_files=..., split="train")` (Arrow, written in batches to its cache) and
  `train_test_split` twice (val, test) with `save_to_disk`: the peer's own streaming path.
Flat memory means the working figure does not grow with the corpus. The summary line gives each size's ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, resource, sys, threading, time
from pathlib import Path
from types import SimpleNamespace
import datasets
from tinylm.data.corpus import build_corpus

def anon():
    status = Path("/proc/self/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("RssAnon:"))) * 1024

peak, done = [anon()], threading.Event()
def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], anon())

kind, raw, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
base, t0 = anon(), time.perf_counter()
threading.Thread(target=sample, daemon=True).start()
if kind == "tinylm":
    cfg = SimpleNamespace(source="files", name=None, text_field="text", label_field="label", max_documents=None,
                          stage_directions="keep", val_fraction=0.005, test_fraction=0.005, split_seed=1337)
    build_corpus(raw, cfg, workdir=out / "rows").save_to_disk(str(out / "corpus"))
else:
    ds = datasets.load_dataset("json", data_files=str(raw / "files" / "corpus.jsonl"), split="train",
                               cache_dir=str(out / "cache"))
    first = ds.train_test_split(test_size=0.01, seed=1337)
    rest = first["test"].train_test_split(test_size=0.5, seed=1337)
    datasets.DatasetDict(train=first["train"], val=rest["train"], test=rest["test"]).save_to_disk(str(out / "c"))
seconds = time.perf_counter() - t0
done.set()
peak[0] = max(peak[0], anon())
print(json.dumps({"base": base, "peak": peak[0], "seconds": seconds,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
'''


def make_corpus(folder: Path, docs: int, seed: int = 0) -> int:
    """`folder/files/corpus.jsonl` of `docs` documents; returns its size in bytes."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    path = folder / "files" / "corpus.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "w") as f:
        for i in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choices(words, k=500)), "label": str(i % 7)}) + "\n")
    return path.stat().st_size


def measure(kind: str, raw: Path, work: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(raw), str(work)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[50_000, 200_000])
    args = parser.parse_args()
    print("| documents | JSONL MB | tinylm working MB | datasets working MB | ratio | peak RSS MB (tinylm, "
          "datasets) | tinylm s | datasets s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for docs in args.docs:
        with tempfile.TemporaryDirectory() as tmp:
            size = make_corpus(Path(tmp) / "raw", docs)
            got = {k: measure(k, Path(tmp) / "raw", Path(tmp) / k) for k in ("tinylm", "datasets")}
        mb = {k: (v["peak"] - v["base"]) / 1e6 for k, v in got.items()}
        ratios.append(f"{docs}: {mb['tinylm'] / mb['datasets']:.2f}")
        print(f"| {docs:,} | {size / 1e6:.0f} | {mb['tinylm']:.0f} | {mb['datasets']:.0f} | "
              f"{mb['tinylm'] / mb['datasets']:.2f} | {got['tinylm']['maxrss'] / 1e6:.0f}, "
              f"{got['datasets']['maxrss'] / 1e6:.0f} | {got['tinylm']['seconds']:.1f} | "
              f"{got['datasets']['seconds']:.1f} |", flush=True)
    print("working memory ratio (tinylm / datasets): " + ", ".join(ratios))


if __name__ == "__main__":
    main()
