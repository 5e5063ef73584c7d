"""Instruction data from the hub or local files, mapped to the one prompt/response schema.

Formats:
- alpaca:   {"instruction", "input" (optional), "output"} -> prompt = instruction (+ blank line + input),
            response = output.
- messages: {"messages": [{"role": "system" | "user" | "assistant", "content"}, ...]} -> response = the
            last assistant message; prompt = the user message before it, preceded by the system message
            and earlier turns as "System: ...", "User: ...", "Assistant: ..." paragraphs.
"""

from __future__ import annotations

import glob
from pathlib import Path

from tinylm.data.sources import read_records


def from_alpaca(rec: dict, where: str) -> dict:
    for key in ("instruction", "output"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"{where}: an alpaca record needs a string {key!r} (keys: {sorted(rec)})")
    extra = (rec.get("input") or "").strip()
    prompt = rec["instruction"].strip() + (f"\n\n{extra}" if extra else "")
    return {"prompt": prompt, "response": rec["output"].strip()}


def from_messages(rec: dict, where: str) -> dict:
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise ValueError(f"{where}: a messages record needs a non-empty list 'messages' of {{role, content}}")
    for m in msgs:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: bad message {m!r}: role system/user/assistant and string content")
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
        raise ValueError(f"{where}: messages must end with a user message then an assistant message")
    context = [f"{m['role'].capitalize()}: {m['content'].strip()}" for m in msgs[:-2]]
    prompt = "\n\n".join([*context, msgs[-2]["content"].strip()])
    return {"prompt": prompt, "response": msgs[-1]["content"].strip()}


def load_instructions(cfg) -> list[dict]:
    """Prompt/response dicts of an InstructionsConfig's data (the first max_items), empty ones dropped."""
    if cfg.source == "hub":
        from datasets import load_dataset

        split = f"{cfg.hub_split}[:{cfg.max_items}]" if cfg.max_items else cfg.hub_split
        ds = load_dataset(cfg.name, cfg.hub_subset, split=split)
        records = [(f"{cfg.name} row {i}", r) for i, r in enumerate(ds)]
    else:
        paths = sorted(Path(p) for p in glob.glob(cfg.path, recursive=True) if Path(p).is_file())
        if not paths:
            raise FileNotFoundError(f"sft.instructions.path={cfg.path!r} matches no files")
        records = [(f"{p} record {i}", r) for p in paths for i, r in enumerate(read_records(p))]
    convert = from_alpaca if cfg.format == "alpaca" else from_messages
    items = [convert(rec, where) for where, rec in records[: cfg.max_items]]
    return [it for it in items if it["prompt"] and it["response"]]
