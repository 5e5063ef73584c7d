"""What the training stages share: seeding, the MLflow stage run (rank zero only), Lightning `fit`, and the
outputs: models/<name>/ (model.safetensors, config.json, tokenizer.json, last.ckpt, hf/ export),
reports/<name>/ (metrics.json for DVC, train.csv / val.csv / loss.png plots) and reports/speed/<name>.json (the
wall-clock figures: train_seconds, the median tokens/s of the steps this process timed, absent if it timed none;
apart so that every other output is a function of the inputs alone, the same bytes in every run).

Under `trainer=ddp` Lightning re-runs the script on every rank: only rank zero opens the MLflow run and
writes outputs; all ranks train. With `tracking: false` nothing is logged to MLflow and mlflow is never
imported (a GPU box may not have it).

The MLflow run of a training stage has system metrics, the stage's DATA files as inputs (sha256 digests), and
the trained model as a LoggedModel (tinylm.pipeline.tracking.log_trained_model) holding models/<name>/'s weights,
config and tokenizer, with the final metrics linked to it (validation ones to the validation data).
"""

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from tinylm.atomic import check_writable, write_json
from tinylm.data.sources import sha256_file
from tinylm.interop.hf import save_hf
from tinylm.models.io import save_pretrained
from tinylm.pipeline.deps import closure
from tinylm.pipeline.paths import MODELS, REPORTS, SPEED, TOKENIZER, TOKENS
from tinylm.training.datamodules import StepDataModule
from tinylm.training.fit import check_accelerator, check_nodes, fit, set_threads
from tinylm.training.optim import OptimConfig

# What each training stage fits on and validates on (a folder: the Arrow files of a `datasets` split), logged as
# inputs of its MLflow run. Keep in step with the stage scripts.
DATA = {"pretrain": {"training": TOKENS / "train.bin", "validation": TOKENS / "val.bin"},
        "sft": {"training": TOKENS / "sft" / "train", "validation": TOKENS / "sft" / "val"},
        "train_seq2seq": {"training": TOKENS / "sft" / "train", "validation": TOKENS / "sft" / "val"},
        "classify": {"training": TOKENS / "cls" / "train", "validation": TOKENS / "cls" / "val"}}


ROOT = Path(__file__).resolve().parents[3]  # the checkout this src/ belongs to


def code_digest(stage: str) -> dict[str, str]:
    """{path: sha256} of the code `pipelines/<stage>.py` runs: its dvc.yaml code deps (tinylm.pipeline.deps)."""
    return {f: sha256_file(ROOT / f) for f in sorted(closure(f"pipelines/{stage}.py", ROOT))}


def optim_dict(t) -> dict:
    """The optimiser/schedule part of a TrainerConfig, as the LightningModules take it."""
    return asdict(OptimConfig.of(t))


def datamodule(train, val, tcfg, *, collate=None, batched: bool = False, step_targets: bool = False) -> StepDataModule:
    """The stage's data: train batches of tcfg.batch_size drawn by (seed, step), so a resume continues them;
    `batched`: the datasets yield whole batches (the pretraining windows); `step_targets`: batches carry the
    step's response tokens per micro-batch (StepBatchSampler), for loss_average=token over the whole step."""
    size = None if batched else tcfg.batch_size
    return StepDataModule(train, val, batch_size=size, seed=tcfg.seed, max_steps=tcfg.max_steps,
                          accumulate=tcfg.accumulate_grad_batches, collate=collate, num_workers=tcfg.num_workers,
                          val_batch_size=size, step_targets=step_targets)


def prepare(tcfg) -> None:
    """A GPU the config asks for and torch cannot use, or several nodes without a launcher, is an error here,
    before any training data is read; then threads and seeds, before any model is built (so initial weights
    depend only on the seed)."""
    try:
        check_accelerator(tcfg.accelerator)
        check_nodes(tcfg.num_nodes)
    except ValueError as e:
        raise SystemExit(f"config error: {e}") from None
    set_threads(tcfg.num_threads)
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)


def train(*, stage: str, name: str, experiment: str, module, datamodule, tcfg, params: dict, inputs: list[Path],
          export_hf: bool, tracking: bool, extra_metrics=None, chat: bool = False) -> dict:
    """Fit `module` and write models/<name>/, reports/<name>/ and reports/speed/<name>.json; returns the final
    metrics and the speed figures (rank zero).

    params: the stage's config (logged). The resume fingerprint hashes it, the trainer config, the `inputs` files
    (every data file the stage reads) and the stage's code (`code_digest`): a checkpoint made by other code or
    from other data is not resumed (DVC reruns the stage when its code changes; resuming would keep the old
    code's weights).
    extra_metrics(module) -> dict: more final numbers for metrics.json (e.g. test accuracy).
    chat: the data was in the chat template (SFT), recorded in the model's config.json for `tinylm generate`.
    """
    out, report = MODELS / name, REPORTS / name
    if rank_zero_only.rank == 0:
        check_writable(out)  # fail before training, not after
        check_writable(report)
        check_writable(SPEED)
    fingerprint = hashlib.sha256(json.dumps(
        {"params": params, "trainer": asdict(tcfg), "inputs": [sha256_file(p) for p in inputs],
         "code": code_digest(stage)},
        sort_keys=True).encode()).hexdigest()[:16]
    zero = rank_zero_only.rank == 0
    track = tracking and zero
    if track:
        import mlflow

        from tinylm.pipeline.tracking import log_data_files, log_trained_model, stage_run, tracking_uri
    run_ctx = stage_run(stage, {**params, "trainer": asdict(tcfg)}, model_name=name, run_name=f"{stage}-{name}",
                        experiment=experiment, system_metrics=True) if track else nullcontext()
    with run_ctx as run:
        data = log_data_files({c: p for c, p in DATA.get(stage, {}).items() if p.exists()}) if track else {}
        start = time.perf_counter()
        trainer, history = fit(module, datamodule, tcfg, out, fingerprint=fingerprint,
                               mlflow_run=(tracking_uri(), run.info.run_id) if track else None)
        if not trainer.is_global_zero:
            return {}
        model = module.model
        save_pretrained(model, out, {"tokenizer.json": TOKENIZER}, chat=chat)
        if export_hf:
            try:
                save_hf(model, out / "hf", TOKENIZER)
            except ValueError as e:  # no transformers counterpart: the stage's own outputs still stand
                print(f"no Hugging Face export: {e}")
        final = {k.replace("/", "_"): v for k, v in history.val[-1].items() if k != "step"}
        tps = [r["train/tokens_per_s"] for r in history.speed if "train/tokens_per_s" in r]
        speed = {"train_seconds": round(time.perf_counter() - start, 2)}  # this process's: a resume counts its part
        if tps:  # none when a resume found training done (wall-clock rows stay out of checkpoints): not measured
            speed["tokens_per_s"] = round(sorted(tps)[len(tps) // 2], 1)
        metrics = {**final, "steps": trainer.global_step, "params": sum(p.numel() for p in model.parameters()),
                   **(extra_metrics(module) if extra_metrics else {})}
        write_json(report / "metrics.json", metrics)
        write_json(SPEED / f"{name}.json", speed)
        history.write(report)
        if track:
            val = data.get("validation")
            log_trained_model(name, out, {f"final/{k}": float(v) for k, v in {**metrics, **speed}.items()},
                              model_type=type(model).__name__, params=params.get("model"),
                              val_data=val.digest if val else None, val_dataset=val)
            mlflow.log_artifacts(str(report), "report")
            mlflow.log_artifact(str(out / "config.json"), "model")
    print(f"{stage} {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in {**metrics, **speed}.items()) + f" -> {out}/")
    return {**metrics, **speed}
