"""Stage summarize (last): write the headline numbers, then log every param and every DVC metrics file (of every
stage in dvc.yaml; not the headline, which repeats their numbers) to this invocation's MLflow pipeline run, so
pipeline runs compare side by side; stages DVC skipped still appear. With `tracking: false`, only the headline.

The headline (reports/headline/, `dvc metrics show reports/headline`): the numbers a first look needs, one small
metrics file per row, since `dvc metrics show` prints one row per file and one column per key (sorted); the
keys are shared between rows so the table stays about 100 columns wide:

    <model>.json           val_loss, val_bpb (decoders), acc: MLM accuracy (encoder) or genre accuracy (classifier)
                           beside majority, the majority class's accuracy
    <model>.<task>.json    exact match of greedy decoding and of beam search on a QA task, beside majority,
                           always answering the most frequent training answer

`beam` is one width fixed in advance, the first of eval.beams (2 in conf/eval/default.yaml: the cheapest), not
the best of the widths on the test set, which would pick the luckiest of several draws on the same items (the
evaluate stage scores no beam on val to pick one there). Every width's score is in reports/eval/report.md.

    python pipelines/summarize.py
"""

import json
from pathlib import Path

from dvc.repo import Repo

from tinylm.atomic import write_json
from tinylm.pipeline.config import SHORT_ANSWER_TASKS, stage_config
from tinylm.pipeline.paths import GENERATORS, MODEL_NAMES, MODELS, REPORTS

HEADLINE = REPORTS / "headline"  # every file below is a `metrics:` output of this stage in dvc.yaml
DIGITS = 4


def metrics_files() -> list[str]:
    """Every `metrics:` path of every stage of the pipeline (foreach/templating resolved by DVC)."""
    with Repo() as repo:
        return [out.def_path for stage in repo.index.stages for out in stage.outs if out.metric]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _node(d, *keys) -> dict:
    """d[k1][k2]... if it is a mapping, else {}."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else {}


def _num(d, *keys):
    """d[k1][k2]... if it is a number, else None (a missing file or key leaves a gap, not an error)."""
    *path, last = keys
    v = _node(d, *path).get(last)
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _row(**values) -> dict:
    return {k: round(float(v), DIGITS) for k, v in values.items() if v is not None}


def headline(beam_width: int, reports: Path = REPORTS) -> dict[str, dict]:
    """File name (without .json) -> its numbers, from the stages' metrics files; `beam`: beam<beam_width>."""
    model = {name: _read(reports / name / "metrics.json") for name in MODEL_NAMES}
    ev = _read(reports / "eval" / "metrics.json")
    rows = {name: _row(val_loss=_num(model[name], "val_loss"), val_bpb=_num(model[name], "val_bpb"))
            for name in ("decoder", "decoder-sft", "seq2seq")}
    rows["encoder"] = _row(val_loss=_num(model["encoder"], "val_loss"), acc=_num(ev, "encoder", "mlm_acc"))
    rows["classifier"] = _row(val_loss=_num(model["classifier"], "val_loss"), acc=_num(ev, "genre", "classifier_acc"),
                              majority=_num(ev, "genre", "majority_acc"))
    for name in GENERATORS:
        for task in SHORT_ANSWER_TASKS:
            by_decoder = _node(ev, name, "tasks", task)
            rows[f"{name}.{task}"] = _row(greedy=_num(by_decoder, "greedy", "exact_match"),
                                          beam=_num(by_decoder, f"beam{beam_width}", "exact_match"),
                                          majority=_num(ev, "majority_baseline", task))
    return rows


def write_headline(beam_width: int) -> list[Path]:
    """Write every headline file (an empty one where nothing is known yet: DVC expects each output)."""
    paths = []
    for name, row in headline(beam_width).items():
        write_json(HEADLINE / f"{name}.json", row)
        paths.append(HEADLINE / f"{name}.json")
    return paths


def main(argv: list[str]) -> None:
    cfg = stage_config(argv)
    beam_width = cfg.eval.beams[0]  # fixed in advance (see the module docstring)
    written = write_headline(beam_width)
    print(f"summarize: {len(written)} headline files -> {HEADLINE}/ (dvc metrics show {HEADLINE})", flush=True)
    if not cfg.tracking:
        print("summarize: tracking is off (tracking: false): nothing logged to MLflow")
        return
    from tinylm.pipeline.tracking import log_pipeline_summary, pipeline_link, register_sft

    print("summarize: logging the params and every metrics file to the MLflow pipeline run", flush=True)
    files = [f for f in metrics_files() if not Path(f).is_relative_to(HEADLINE)]  # it repeats the others' numbers
    run_id = log_pipeline_summary(cfg.to_dict(), files, experiment=cfg.name, headline=headline(beam_width))
    print(f"summarize: {len(files)} metrics files -> MLflow pipeline run {run_id}")
    sft = MODELS / "decoder-sft" / "model.safetensors"  # its LoggedModel -> a registry version, aliases moved
    print(f"summarize: {register_sft(sft, run_id) if sft.exists() else f'{sft} is missing: nothing registered'}")
    print(f"summarize: the pipeline runs with the headline columns: {pipeline_link()}")

