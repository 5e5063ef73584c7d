"""Where the DVC stages read and write, relative to the repository root (DVC's working directory). The only
module that names these folders (tests/test_layers.py holds the library to that).

Scripts that may run under DDP write only on rank zero (Lightning re-runs the whole script on every rank);
the data stages are single-process.
"""

from pathlib import Path

RAW = Path("data/raw")  # download: the exact bytes fetched, and manifest.json
CORPUS = Path("data/corpus")  # prepare: DatasetDict train/val/test (tinylm.data.corpus)
SFT = Path("data/sft")  # build_tasks: DatasetDict train/val/test of task/doc/prompt/response
CLS_SETS = Path("data/cls")  # build_tasks: DatasetDict train/val/test of doc/text/label (ClassLabel)
TOKENIZER_DIR = Path("artifacts/tokenizer")  # train_tokenizer
TOKENIZER = TOKENIZER_DIR / "tokenizer.json"
TOKENS = Path("data/tokens")  # tokenize: {train,val,test}.bin + meta.json (pretraining), sft/, cls/
METRICS = Path("reports/data")  # numeric JSON metrics of the data stages: <stage>.json
MODELS = Path("models")  # training stages: models/<name>/ (weights, config, tokenizer, last.ckpt, hf/)
REPORTS = Path("reports")  # training stages: reports/<name>/ metrics.json, train.csv, val.csv, loss.png
MODEL_NAMES = ("decoder", "decoder-sft", "seq2seq", "encoder", "classifier")  # models/<name>/, reports/<name>/
GENERATORS = ("decoder-sft", "seq2seq")  # the models evaluate decodes (greedy, beams, sampling)
SPEED = REPORTS / "speed"  # every wall-clock figure, <stage or model>.json: the only outputs that differ between runs
