"""The `tinylm` command line.

    tinylm info models/decoder-sft
    tinylm generate --model models/decoder-sft --prompt $'Which play is this from?\\nHAMLET:\\n...' \\
        --decoder beam --num-beams 4
    tinylm generate --model models/decoder --prompt "ROMEO:" --decoder sample --temperature 0.8 --top-p 0.95 \\
        --repetition-penalty 1.2
    tinylm export --model models/decoder --out hf-decoder
    tinylm compare --metric '*val_loss'        # runs `dvc exp show --json` here; or --dvc-json FILE, --mlflow

A model directory holds model.safetensors, config.json and tokenizer.json (the training stages write them).
Models fine-tuned with the chat template (config.json's "chat": decoder-sft) get the prompt wrapped in it
unless --raw is given; a prompt longer than the context is cut with a warning (a chat prompt loses its
middle, keeping its instruction line and its end, as the evaluate stage's prompts do; a raw one its start), or
refused with --no-truncate.
`compare` groups runs by their params without `seed` keys and prints each metric's mean +- sd over the seeds.
"""

import argparse
import json
import math
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
    from tinylm.pipeline.paths import MODELS, REPORTS

    metrics = path.parent.parent / REPORTS / path.name / "metrics.json"  # a pipeline's model: <repo>/models/<name>
    if path.resolve().parent.name == MODELS.name and metrics.exists():
        print(f"  metrics ({metrics}): {json.loads(metrics.read_text())}")


def generate(args) -> None:
    from tinylm.data.chat import ChatTemplate
    from tinylm.data.special_tokens import EOS
    from tinylm.decoding.dispatch import decode
    from tinylm.decoding.sampling import MIN_TEMPERATURE
    from tinylm.evaluation.generation import cut_at_eos, fit_prompt, head_length, prompt_room
    from tinylm.models import GPT
    from tinylm.models.io import is_chat_model

    if args.num_beams < 1:
        raise SystemExit(f"error: --num-beams must be >= 1, got {args.num_beams}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise SystemExit(f"error: --top-p must be in (0, 1], got {args.top_p}")
    if not (MIN_TEMPERATURE <= args.temperature < math.inf):  # nan fails it too
        raise SystemExit(f"error: --temperature must be >= {MIN_TEMPERATURE} (lower: use --decoder greedy), got "
                         f"{args.temperature}")
    if args.max_new_tokens < 1:
        raise SystemExit(f"error: --max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.top_k is not None and args.top_k < 1:
        raise SystemExit(f"error: --top-k must be >= 1, got {args.top_k}")
    if args.repetition_penalty is not None and not (args.repetition_penalty > 0 and
                                                    math.isfinite(args.repetition_penalty)):
        raise SystemExit(f"error: --repetition-penalty must be > 0, got {args.repetition_penalty}")
    model, tok = _load(args.model)
    if not isinstance(model, GPT):  # a classifier on a GPT backbone has arch "gpt" too
        raise SystemExit(f"error: {args.model} holds a {type(model).__name__} ({model.config.arch}); generate runs "
                         "decoder language models")
    tmpl = ChatTemplate.from_tokenizer(tok) if not args.raw and is_chat_model(args.model) else None
    eos = tok.token_to_id(EOS)
    ids = tmpl.prompt_ids(args.prompt) if tmpl else tok.encode(args.prompt)
    ids = ids or [eos]  # an empty raw prompt starts a document: after <|endoftext|>, as in pretraining
    try:
        room = prompt_room(model.config.block_size, args.max_new_tokens)
    except ValueError as e:
        raise SystemExit(f"error: --{str(e).replace('_', '-')}") from None
    if len(ids) > room:
        if not args.truncate:
            raise SystemExit(f"error: the prompt has {len(ids)} tokens; with --max-new-tokens={args.max_new_tokens} "
                             f"at most {room} fit the context: shorten it or drop --no-truncate")
        head = head_length(tmpl, args.prompt, ids, seq2seq=False) if tmpl else 0  # as evaluate fits its prompts
        kept = "its middle dropped, its instruction line and end kept" if head else f"its last {room} kept"
        print(f"warning: prompt cut to {room} of {len(ids)} tokens ({kept})", file=sys.stderr)
        ids = fit_prompt(ids, room, head)
    x = torch.tensor([ids], dtype=torch.long)
    decoder = f"beam{args.num_beams}" if args.decoder == "beam" else args.decoder
    with torch.no_grad():
        out = decode(model, x, decoder, args.max_new_tokens, length_penalty=args.length_penalty,
                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                     repetition_penalty=args.repetition_penalty, seed=args.seed, eos_token_id=eos)
    print(tok.decode(cut_at_eos(out[0, len(ids):].tolist(), eos)[0]))


def export(args) -> None:
    from tinylm.interop.hf import save_hf

    model, _ = _load(args.model)
    try:
        save_hf(model, args.out, Path(args.model) / "tokenizer.json")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.out} (load with transformers' AutoModel*.from_pretrained)")


def compare(args) -> None:
    from tinylm.pipeline.compare import compare as compare_runs

    compare_runs(args.metric, dvc_json=args.dvc_json, mlflow=args.mlflow)


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
    s.add_argument("--repetition-penalty", type=float, default=None,
                   help="sample: a seen token's logit l becomes l / r (l > 0) or l * r (CTRL's penalty)")
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
