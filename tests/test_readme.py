"""Every shell command of the README's ```bash blocks works as written.

The commands are read from README.md (continuation lines joined, comments and blank lines dropped). Each one is
either in RUN or in LISTED, else the test fails, so a command added to the README gets covered:

- RUN: run with bash, in README order as a user types them after `make run`, in a copy of the smoke pipeline's
  outputs (conftest's `full`, with its results committed as a clone's would be), `.venv/bin` on PATH; each must
  exit 0 and print what it says. The copy keeps the state the commands leave (queued experiments, the
  params.yaml a command writes, ...), as a user's clone would.
- LISTED: what CI cannot have (a hub dataset, S3, SLURM and GPUs, a server that runs until stopped) or what
  takes minutes (a full `dvc exp run`, `make run`), with the reason. These are checked for shell syntax
  (`bash -n`), `make` targets with `make -n`.

The Hydra overrides of every command (`-S` of `dvc exp run`, the arguments of `python -m tinylm.pipeline.config` and of
a stage script) are composed from conf/ and validated by tinylm.pipeline.config, as DVC's composition and the stages do
(a sweep `k=a,b` is each of its values).
"""

import json
import re
import shlex
import subprocess
from itertools import product
from pathlib import Path

import pytest
from conftest import ROOT, copy_repo, run_cmd

from tinylm.pipeline.config import Config, ConfigError, compose

README = ROOT / "README.md"
CONF = ROOT / "conf"
WIDTH = 100  # the terminal the headline must fit

FULL_RUN = "full pipeline run: minutes; overrides validated"
HUB = "a Hugging Face hub dataset (CI is offline); " + FULL_RUN

# command -> what its output (stdout and stderr) must contain
RUN: dict[str, tuple[str, ...]] = {
    "dvc metrics show reports/headline": ("reports/headline/decoder-sft.speaker.json", "val_loss", "greedy"),
    "dvc metrics show": ("reports/eval/metrics.json", "reports/headline/decoder.json", "reports/data/corpus.json"),
    "dvc plots show": ("dvc_plots/index.html",),
    "dvc exp show": ("Experiment", "workspace"),
    "tinylm info models/decoder": ("models/decoder: GPT (gpt)", "parameters", "metrics (reports/decoder/metrics.json)"),
    "tinylm generate --model models/decoder-sft --prompt $'Which play is this from?\\nHAMLET:\\nTo be, or not to be, "
    "that is the question:' --decoder beam --num-beams 4": (),  # a smoke model's answer: any text
    "tinylm generate --model models/decoder --prompt \"ROMEO:\" --decoder sample --temperature 0.8 --top-p 0.95": (),
    "tinylm export --model models/decoder-sft --out hf-decoder-sft": ("wrote hf-decoder-sft",),
    "python -m tinylm.pipeline.reference": ("reproduced: HEAD's dvc.lock against this run",),
    "git diff -- dvc.lock": (),  # the copy's results are committed: no change to show
    "dvc metrics diff": (),
    "dvc exp run --queue -S 'decoder=gpt2,baichuan'": ("Queued experiment",),
    "python -m tinylm.pipeline.config decoder=baichuan trainer.max_steps=10 trainer.warmup_steps=2": (
        "preset: baichuan", "max_steps: 10", "warmup_steps: 2"),
    "python pipelines/pretrain.py decoder decoder=baichuan trainer.max_steps=10 trainer.warmup_steps=2": (
        "pretrain decoder: val_loss=", "steps=10"),
    "dvc exp run --queue -S 'trainer.seed=1,2,3,4'": ("Queued experiment",),
    "dvc exp run --queue -S 'trainer.seed=1,2,3,4' -S decoder=baichuan": ("Queued experiment",),
    "tinylm compare --metric '*val_loss' --metric '*greedy.exact_match'": (
        "mean ± sd", "reports/decoder/metrics/val_loss",
        "reports/eval/metrics/decoder-sft.tasks.play.greedy.exact_match"),
    "tinylm compare --mlflow --metric '*val_loss'": ("mean ± sd", "reports/decoder/metrics/val_loss"),
    "python -m tinylm.pipeline.config --out params.yaml experiment=gpt2_124m trainer.num_nodes=2": (),  # see below
    "dvc commit -f pretrain@decoder": (),
    "dvc remote add -d storage s3://bucket/tinylm": ("Setting 'storage' as a default remote",),
}

# command -> why CI does not run it
LISTED: dict[str, str] = {
    "make run": "the default pipeline: 12 to 14 minutes on 2 cores; CI runs the same stages on the smoke "
                "experiment (conftest's `full` fixture), whose outputs the commands above run on",
    "make test": "the test suite, this file included: what CI runs",
    "make ui": "serves the MLflow UI until stopped; tests/test_pipeline_full.py serves the same store with "
               "`mlflow ui` and finds the runs through its API",
    "dvc exp run -S decoder=baichuan -S trainer.max_steps=2000": FULL_RUN,
    "dvc exp run -S +decoder.attention=flash": FULL_RUN,
    "dvc exp run -S trainer.precision=auto": FULL_RUN,
    "dvc queue start": "runs the queued experiments, a full pipeline run each (minutes); queueing them runs above",
    "dvc exp run -S data=tinystories -S sft=alpaca -S sft.max_length=128 -S data.label_field=...": HUB,
    "dvc exp run -S data=files -S data.path='corpus/*.jsonl' -S data.label_field=label -S sft=alpaca "
    "-S sft.max_length=128":
        "the user's own files (corpus/*.jsonl) and Stanford Alpaca from the hub (CI is offline); " + FULL_RUN,
    "dvc exp run -S sft=alpaca -S decoder.block_size=256 -S seq2seq.block_size=256":
        "Stanford Alpaca from the hub (CI is offline); " + FULL_RUN,
    "dvc exp run -S sft=alpaca -S sft.max_length=128 -S sft.instructions.source=files "
    "-S sft.instructions.path='corpus/alpaca.json'": "the user's own corpus/alpaca.json; " + FULL_RUN,
    "dvc repro tokenize": "after the line before (which runs), params.yaml is experiment=gpt2_124m: the data "
                          "stages would download FineWeb from the hub (CI is offline)",
    "srun --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 python pipelines/pretrain.py decoder":
        "SLURM: two nodes of 8 GPUs",
    "dvc push": "an S3 bucket (and dvc-s3); tests/test_pipeline_full.py pushes to and pulls from a local remote",
    "mlflow server --backend-store-uri postgresql://user:pass@db/mlflow --artifacts-destination "
    "s3://bucket/mlflow --host 0.0.0.0 --port 5000": "serves until stopped, on PostgreSQL and S3; "
                                                      "tests/test_team.py runs one on a throwaway PostgreSQL",
    "export MLFLOW_TRACKING_URI=http://mlflow-host:5000": "points the stages at the team's server above (none in "
                                                          "CI); tests/test_team.py logs stages to a local one",
}

# the headline files summarize writes and the numbers each must hold after the smoke pipeline
HEADLINE = {"decoder": {"val_loss", "val_bpb"}, "decoder-sft": {"val_loss", "val_bpb"},
            "seq2seq": {"val_loss", "val_bpb"}, "encoder": {"val_loss", "acc"},
            "classifier": {"val_loss", "acc", "majority"},
            **{f"{m}.{t}": {"greedy", "beam", "majority"} for m in ("decoder-sft", "seq2seq")
               for t in ("speaker", "play")}}


# ---- reading the README ------------------------------------------------------------------------------------
def strip_comment(line: str) -> str:
    """`line` without its shell comment: a # that starts a word, outside quotes ('...', "...", $'...')."""
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote != "'":
                i += 1
            elif c == quote[-1]:
                quote = None
        elif c == "$" and line[i + 1:i + 2] == "'":
            quote, i = "$'", i + 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line.rstrip()


def commands(path: Path = README) -> list[tuple[int, str]]:
    """(line number, command) of every ```bash block: continuation lines joined, comments and blanks dropped."""
    out, lang, pending = [], None, None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            lang = None if lang is not None else (fence.group(1) or "text")
            continue
        if lang not in ("bash", "sh", "shell"):
            continue
        start, text = (n, line.strip()) if pending is None else (pending[0], pending[1] + " " + line.strip())
        if text.endswith("\\") and not text.endswith("\\\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        if cmd := strip_comment(text).strip():
            out.append((start, cmd))
    return out


COMMANDS = commands()
SHELL_OPS = {">", ">>", "<", "|", "||", "&&", ";", "2>&1", "&"}


def overrides_of(cmd: str) -> list[str] | None:
    """The Hydra overrides a command composes the config with: `-S` of `dvc exp run`, the key=value arguments of
    `python -m tinylm.pipeline.config` and of a stage script `python pipelines/*.py`; None: it composes nothing."""
    words = shlex.split(cmd, comments=True)
    words = words[:next((i for i, w in enumerate(words) if w in SHELL_OPS), len(words))]
    if words[:3] == ["dvc", "exp", "run"]:
        found = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-S", "--set-param")]
        return found or None
    for i, w in enumerate(words):
        if w.startswith("python") and words[i + 1:i + 3] == ["-m", "tinylm.pipeline.config"]:
            rest = words[i + 3:]
            return [a for j, a in enumerate(rest) if "--out" not in (a, rest[j - 1] if j else None)]
        if w.startswith("python") and i + 1 < len(words) and re.match(r"pipelines/\w+\.py$", words[i + 1]):
            found = [a for a in words[i + 2:] if "=" in a and not a.startswith("-")]
            return found or None
    return None


def sweep(overrides: list[str]) -> list[list[str]]:
    """Each combination of a sweep's values (`k=a,b`: commas outside brackets and quotes), as DVC queues them."""
    def values(o: str) -> list[str]:
        key, _, value = o.partition("=")
        parts, depth, cur = [], 0, ""
        for c in value:
            depth += c in "[{(" and 1 or c in "]})" and -1 or 0
            if c == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += c
        return [f"{key}={p}" for p in [*parts, cur]]
    return [list(c) for c in product(*(values(o) for o in overrides))]


def ids(cmd: str) -> str:
    return cmd if len(cmd) <= 60 else cmd[:57] + "..."


# ---- static: every command is covered; listed ones are valid shell; every override composes and validates ---
def test_the_readme_has_commands_and_the_parser_handles_continuations_and_comments():
    assert len(COMMANDS) >= 30
    text = dict((c, n) for n, c in COMMANDS)
    assert "dvc metrics show" in text and not any("#" in c and "'" not in c for c in text)
    assert any(c.startswith("mlflow server") and c.endswith("--port 5000") for c in text)
    assert strip_comment("dvc exp show   # compare") == "dvc exp show"
    assert strip_comment("tinylm compare --metric '*val#loss'  # x") == "tinylm compare --metric '*val#loss'"
    assert strip_comment("echo $'a\\'#b' # c") == "echo $'a\\'#b'"


def test_every_readme_command_is_run_or_listed():
    missing = [f"README.md:{n}: {c}" for n, c in COMMANDS if c not in RUN and c not in LISTED]
    assert not missing, ("README commands neither run nor listed in tests/test_readme.py (add each to RUN with "
                         "what it prints, or to LISTED with why CI cannot run it):\n" + "\n".join(missing))
    assert not set(RUN) & set(LISTED)
    stale = sorted((set(RUN) | set(LISTED)) - {c for _, c in COMMANDS})
    assert not stale, f"no longer in the README: {stale}"


@pytest.mark.parametrize("cmd", sorted({c for _, c in COMMANDS if c in LISTED}), ids=ids)
def test_a_listed_command_is_valid_shell(cmd):
    done = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    words = shlex.split(cmd)
    if words[0] == "make":  # the target exists and its recipe expands; -n runs nothing
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("cmd", sorted({c for _, c in COMMANDS if overrides_of(c) is not None}), ids=ids)
def test_the_overrides_of_a_command_compose_and_validate(cmd):
    for overrides in sweep(overrides_of(cmd)):
        try:
            Config.from_dict(compose(overrides, CONF))
        except ConfigError as e:
            pytest.fail(f"{cmd}\n{overrides}: {e}")


def test_the_override_reader():
    assert overrides_of("dvc exp run --queue -S 'trainer.seed=1,2' -S decoder=baichuan") == [
        "trainer.seed=1,2", "decoder=baichuan"]
    assert overrides_of("python -m tinylm.pipeline.config --out p.yaml experiment=gpt2_124m trainer.num_nodes=2") == [
        "experiment=gpt2_124m", "trainer.num_nodes=2"]
    assert overrides_of("python pipelines/pretrain.py decoder trainer.max_steps=10") == ["trainer.max_steps=10"]
    assert overrides_of("srun -N2 python pipelines/pretrain.py decoder") is None
    assert overrides_of("dvc exp show") is None and overrides_of("dvc queue start") is None
    assert sweep(["trainer.seed=1,2", "decoder=gpt2", "eval.beams=[2,4]"]) == [
        ["trainer.seed=1", "decoder=gpt2", "eval.beams=[2,4]"], ["trainer.seed=2", "decoder=gpt2", "eval.beams=[2,4]"]]


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_steps=10"], "trainer.warmup_steps=50: must be < max_steps=10 (the warm-up is part of the run); "
                               "set it below max_steps, e.g. to 1"),
    (["trainer.max_steps=500", "trainer.warmup_steps=500"], "trainer.warmup_steps=500: must be < max_steps=500"),
    (["encoder.train.max_steps=10"], "encoder.train.warmup_steps=50: must be < max_steps=10"),
    (["cls.train.max_steps=20"], "cls.train.warmup_steps=60: must be < max_steps=20 (the warm-up is part of the "
                                 "run); set it below max_steps, e.g. to 2"),
    (["trainer.max_steps=1"], "e.g. to 0"),
])
def test_a_short_run_with_the_default_warmup_names_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(compose(overrides, CONF))
    assert message in str(e.value)


def test_the_fixes_that_message_names_work():
    for fix in (["trainer.max_steps=10", "trainer.warmup_steps=1"], ["trainer.max_steps=1", "trainer.warmup_steps=0"],
                ["encoder.train.max_steps=10", "+encoder.train.warmup_steps=1"],
                ["cls.train.max_steps=20", "cls.train.warmup_steps=2"]):
        Config.from_dict(compose(fix, CONF))


# ---- the runnable commands, in README order, on a copy of the smoke pipeline's outputs ----------------------
@pytest.fixture(scope="module")
def ran(full, tmp_path_factory):
    """(the copy, its env, {(line, command): CompletedProcess} of every RUN command, run in README order)."""
    repo = copy_repo(full[0], tmp_path_factory.mktemp("readme") / "repo")
    env = {**full[1], "PYTHONPATH": str(repo / "src")}
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run_cmd(["git", "add", "-A"], repo, env)  # the results committed, as in a clone: what `tinylm compare` reads
    run_cmd([*git, "commit", "-q", "--allow-empty", "-m", "pipeline results"], repo, env)
    results = {}
    for n, cmd in COMMANDS:
        if cmd in RUN:
            results[n, cmd] = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True,
                                             timeout=600)
    return repo, env, results


@pytest.mark.slow
@pytest.mark.parametrize("n, cmd", [(n, c) for n, c in COMMANDS if c in RUN], ids=lambda x: ids(str(x)))
def test_a_readme_command_runs_as_written(ran, n, cmd):
    done = ran[2][n, cmd]
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README.md:{n}: {cmd}\nexit {done.returncode}:\n{output[-4000:]}"
    missing = [s for s in RUN[cmd] if s not in output]
    assert not missing, f"README.md:{n}: {cmd}\nprints none of {missing}:\n{output[-4000:]}"


@pytest.mark.slow
def test_the_headline_fits_a_terminal_and_holds_every_number(ran):
    repo, _, results = ran
    out = next(d.stdout for (_, c), d in results.items() if c == "dvc metrics show reports/headline")
    lines = out.rstrip("\n").splitlines()
    assert max(map(len, lines)) <= WIDTH, "\n" + out
    assert len(lines) == 1 + len(HEADLINE), "\n" + out
    for name, keys in HEADLINE.items():
        row = json.loads((repo / "reports/headline" / f"{name}.json").read_text())
        assert set(row) == keys, name
        assert all(isinstance(v, float) for v in row.values()), (name, row)
        assert all(0 <= row[k] <= 1 for k in keys - {"val_loss", "val_bpb"}), (name, row)
        line = next(ln for ln in lines if ln.startswith(f"reports/headline/{name}.json "))
        assert line.split()[1:].count("-") == 6 - len(keys), line  # 6 columns; the others are shown


@pytest.mark.slow
def test_what_the_commands_leave_behind(ran):
    repo, env, _ = ran
    assert (repo / "dvc_plots/index.html").is_file()
    assert (repo / "hf-decoder-sft/config.json").is_file()
    assert "num_nodes: 2" in (repo / "params.yaml").read_text()
    assert "s3://bucket/tinylm" in (repo / ".dvc/config").read_text()
    queued = run_cmd(["dvc", "queue", "status"], repo, env).stdout
    assert queued.count("Queued") == 2 + 4 + 4, queued  # the three sweeps, none started
