"""The `tinylm` command line.

    tinylm info models/decoder-sft
    tinylm generate --model models/decoder-sft --prompt "Which play is this from?\\nHAMLET:\\n..." \\
        --decoder beam --num-beams 4
    tinylm generate --model models/decoder --prompt "ROMEO:" --decoder sample --temperature 0.8 --top-p 0.95
    tinylm export --model models/decoder --out hf-decoder
    tinylm compare --metric '*val_loss'        # runs `dvc exp show --json` here; or --dvc-json FILE, --mlflow

A model directory holds model.safetensors, config.json and tokenizer.json (the training stages write them).
Models fine-tuned with the chat template (decoder-sft) get the prompt wrapped in it unless --raw is given;
a prompt longer than the context is cut from the left with a warning, or refused with --no-truncate.
`compare` groups runs by their params without `seed` keys and prints each metric's mean +- sd over the seeds.
"""

import argparse
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import torch


def _load(model_dir: str):
    from tinylm.models.io import load_pretrained
    from tinylm.tokenizer import BPETokenizer

    path = Path(model_dir)
    if not (path / "tokenizer.json").exists():
        raise SystemExit(f"error: {path / 'tokenizer.json'} is missing: pass a model directory written by a training "
                         "stage (e.g. models/decoder-sft after `dvc repro`)")
    try:
        return load_pretrained(path), BPETokenizer.load(path / "tokenizer.json")
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


def info(args) -> None:
    path = Path(args.model)
    model, tok = _load(args.model)
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    print(f"{path}: {type(model).__name__} ({cfg.arch}), {n:,} parameters")
    print(f"  layers {cfg.n_layer}, heads {cfg.n_head} (kv {cfg.n_kv_head}), width {cfg.n_embd}, mlp {cfg.mlp} "
          f"{cfg.mlp_hidden}, context {cfg.block_size}, positions {cfg.position}, "
          f"norm {cfg.norm} ({cfg.norm_placement})")
    print(f"  tokenizer: vocab {tok.vocab_size}, special tokens {list(tok.special_tokens)}")
    for name in sorted(p.name for p in path.iterdir()):
        print(f"  {name}")
    metrics = path.parent.parent / "reports" / path.name / "metrics.json"
    if metrics.exists():
        print(f"  metrics ({metrics}): {json.loads(metrics.read_text())}")


def generate(args) -> None:
    from tinylm.data.chat import ChatTemplate
    from tinylm.data.special_tokens import EOS
    from tinylm.decoding import beam_search, greedy_decode, sample

    if args.num_beams < 1:
        raise SystemExit(f"error: --num-beams must be >= 1, got {args.num_beams}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise SystemExit(f"error: --top-p must be in (0, 1], got {args.top_p}")
    if args.temperature <= 0:
        raise SystemExit(f"error: --temperature must be > 0, got {args.temperature}")
    model, tok = _load(args.model)
    if model.config.arch != "gpt":
        raise SystemExit(f"error: {args.model} holds a {model.config.arch} model; generate runs decoder LMs")
    chat = not args.raw and "sft" in Path(args.model).name
    ids = ChatTemplate.from_tokenizer(tok).prompt_ids(args.prompt) if chat else tok.encode(args.prompt)
    room = model.config.block_size - args.max_new_tokens
    if room < 1:
        raise SystemExit(f"error: --max-new-tokens={args.max_new_tokens} leaves no room for a prompt in the "
                         f"context of {model.config.block_size} tokens")
    if len(ids) > room:
        if not args.truncate:
            raise SystemExit(f"error: the prompt has {len(ids)} tokens; with --max-new-tokens={args.max_new_tokens} "
                             f"at most {room} fit the context: shorten it or drop --no-truncate")
        print(f"warning: prompt cut to its last {room} of {len(ids)} tokens", file=sys.stderr)
        ids = ids[-room:]
    x, eos = torch.tensor([ids]), tok.token_to_id(EOS)
    with torch.no_grad():
        if args.decoder == "greedy":
            out = greedy_decode(model, x, args.max_new_tokens, eos_token_id=eos)
        elif args.decoder == "beam":
            out, _ = beam_search(model, x, args.num_beams, args.max_new_tokens, eos_token_id=eos,
                                 length_penalty=args.length_penalty)
        else:
            out = sample(model, x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, eos_token_id=eos, seed=args.seed)
    new = out[0, len(ids):].tolist()
    print(tok.decode(new[:new.index(eos)] if eos in new else new))


def export(args) -> None:
    from tinylm.interop.hf import save_hf

    model, _ = _load(args.model)
    try:
        save_hf(model, args.out, Path(args.model) / "tokenizer.json")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.out} (load with transformers' AutoModel*.from_pretrained)")


def _dvc_runs(show: list[dict]) -> list[dict]:
    """Runs with metrics in `dvc exp show --json` output, oldest first: each baseline commit and its experiments
    (the workspace row repeats the last applied experiment and queued experiments have no metrics: both left
    out). A run: name, config (`tracking.config_hash` of its params), flat params, metrics keyed
    "<file without .json>/<a.b>" as on MLflow pipeline runs."""
    from tinylm.tracking import config_hash, flatten

    out = []
    for row in show:
        if row["rev"] == "workspace":
            continue
        for r in [row, *(rev for exp in row.get("experiments") or [] for rev in exp["revs"])]:
            data = r.get("data") or {}
            metrics = {f"{Path(path).with_suffix('').as_posix()}/{k}": float(v)
                       for path, m in (data.get("metrics") or {}).items() for k, v in flatten(m.get("data", {})).items()
                       if isinstance(v, int | float) and not isinstance(v, bool)}
            if r.get("error") or not metrics:
                continue
            params = {k: v for f in (data.get("params") or {}).values() for k, v in f.get("data", {}).items()}
            out.append({"name": r.get("name") or r["rev"][:7], "config": config_hash(params),
                        "params": {k: str(v) for k, v in flatten(params).items()}, "metrics": metrics,
                        "time": data.get("timestamp") or ""})
    return sorted(out, key=lambda r: r["time"])


def _mlflow_runs() -> list[dict]:
    """Finished pipeline runs of the MLflow store (`tracking.tracking_uri()`) that carry the config hash tag, oldest
    first."""
    from mlflow.tracking import MlflowClient

    from tinylm.tracking import CONFIG_HASH_TAG, PIPELINE_EXPERIMENT, tracking_uri

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(PIPELINE_EXPERIMENT)
    if exp is None:
        raise SystemExit(f"error: no experiment {PIPELINE_EXPERIMENT!r} in {tracking_uri()}: run the pipeline first")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000,
                              order_by=["attributes.start_time ASC"])
    return [{"name": r.info.run_name, "config": r.data.tags[CONFIG_HASH_TAG], "params": dict(r.data.params),
             "metrics": dict(r.data.metrics)} for r in runs if CONFIG_HASH_TAG in r.data.tags]


def compare(args) -> None:
    import numpy as np

    from tinylm.evaluation.statistics import permutation_test

    if args.mlflow:
        runs = _mlflow_runs()
    else:
        if args.dvc_json:
            text = Path(args.dvc_json).read_text()
        else:
            done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True,
                                  text=True)
            if done.returncode:
                raise SystemExit(f"error: `dvc exp show --json` failed: {done.stderr.strip()}")
            text = done.stdout
        runs = _dvc_runs(json.loads(text))
    if not runs:
        raise SystemExit("error: no finished runs with metrics to compare")
    by_config: dict[str, list[dict]] = {}  # runs come oldest first: #1 is the config run first
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    groups = list(by_config.values())
    keys = sorted({k for r in runs for k in r["params"]})
    seeds = [k for k in keys if k.split(".")[-1] == "seed"]
    differ = [k for k in keys if k not in seeds and len({r["params"].get(k) for r in runs}) > 1]
    for i, g in enumerate(groups, 1):
        label = " ".join(f"{k}={g[0]['params'].get(k)}" for k in differ) or "one config"
        seen = ", ".join("/".join(r["params"].get(k, "?") for k in seeds) for r in g)
        print(f"#{i} {label}: {len(g)} runs" + (f", {'/'.join(seeds)} {seen}" if seeds else "")
              + f" (config {g[0]['config']})")
    names = sorted({m for r in runs for m in r["metrics"]})
    names = [m for m in names if not args.metric or any(fnmatch.fnmatchcase(m, p) for p in args.metric)]
    if not names:
        raise SystemExit(f"error: no metric matches {args.metric}")
    w = max(len(m) for m in names)
    print(f"\n{'metric':<{w}}" + "".join(f"{f'#{i} mean ± sd (n)':>24}" for i in range(1, len(groups) + 1))
          + "".join(f"{f'#{i} - #1':>12}{'p':>8}" for i in range(2, len(groups) + 1)))
    floor = False
    for m in names:
        values = [np.array([r["metrics"][m] for r in g if m in r["metrics"]]) for g in groups]
        line = f"{m:<{w}}" + "".join(f"{_mean_sd(v):>24}" for v in values)
        for v in values[1:]:
            if not len(v) or not len(values[0]):
                line += f"{'-':>12}{'-':>8}"
                continue
            t = permutation_test(v, values[0])
            at_floor = t["exact"] and t["p_value"] <= t["min_p"] * (1 + 1e-9) < 1
            floor |= at_floor
            line += f"{t['diff']:>12.4g}{t['p_value']:>7.3f}{'^' if at_floor else ' '}"
        print(line)
    print("\nmean ± sample sd over the runs (n); p: two-sided permutation test of the difference of means against #1, "
          "exact (every split of the pooled runs into groups of these sizes) up to 20000 splits")
    if floor:
        print("^ the smallest p these runs can give (0.10 for 3 runs against 3, 0.029 for 4 against 3): add seeds")


def _mean_sd(v) -> str:
    if len(v) > 1:
        return f"{v.mean():.4g} ± {v.std(ddof=1):.2g} ({len(v)})"
    return f"{v.mean():.4g} ({len(v)})" if len(v) else "-"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tinylm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="what a model directory holds")
    s.add_argument("model")
    s.set_defaults(func=info)
    s = sub.add_parser("generate", help="continue a prompt with a trained decoder")
    s.add_argument("--model", required=True)
    s.add_argument("--prompt", required=True)
    s.add_argument("--decoder", choices=["greedy", "beam", "sample"], default="greedy")
    s.add_argument("--num-beams", type=int, default=4)
    s.add_argument("--length-penalty", type=float, default=1.0)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--raw", action="store_true", help="do not wrap the prompt in the chat template")
    s.add_argument("--no-truncate", dest="truncate", action="store_false", help="refuse a prompt that does not fit")
    s.set_defaults(func=generate)
    s = sub.add_parser("export", help="export to a transformers directory")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=export)
    s = sub.add_parser("compare", help="mean +- sd over seeds of each config's metrics, and a test between configs")
    s.add_argument("--dvc-json", metavar="FILE", help="saved `dvc exp show --json` output (default: run it here)")
    s.add_argument("--mlflow", action="store_true", help="read the MLflow pipeline runs instead of DVC")
    s.add_argument("--metric", action="append", metavar="GLOB", help="metric names to show (repeatable)")
    s.set_defaults(func=compare)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
