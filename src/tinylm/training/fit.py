"""Run one training stage with Lightning: resumable, seeded, logged to MLflow, scaled by Lightning's own
strategies (`ddp`, `fsdp`, torchrun or SLURM launch) — nothing distributed is written here.

Resume rule: `out_dir/last.ckpt` is reused only when `out_dir/fingerprint.txt` equals this run's config
fingerprint; otherwise the directory's checkpoint is discarded (with a message) and training starts fresh.
Checkpoints are saved every `ckpt_every` steps and at the end, and loaded with weights_only=True.
"""

import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import MLFlowLogger

from tinylm.training.history import MetricHistory


class _StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that rewrites a step's checkpoint after a validation at that same step: the step
    checkpoint is taken before validation runs, and Lightning does not rerun that validation on resume, so
    without this the resumed MetricHistory would lack the validation row."""

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        step = trainer.global_step  # the same on every rank: saving is collective under DDP
        if trainer.state.fn == "fit" and not trainer.sanity_checking and step and step % self._every_n_train_steps == 0:
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt", weights_only=False)


class _ProgressBar(TQDMProgressBar):
    """Shows train/loss from the callback metrics, read when the bar refreshes (on logging steps): Lightning
    converts progress-bar metrics to numbers after every batch, a host sync per step on a GPU, so training
    metrics are not logged with prog_bar."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{float(loss):.3f}"
        return metrics


def resume_path(out_dir: Path, fingerprint: str, say=print) -> Path | None:
    """last.ckpt if it belongs to this configuration and reads, else None (stale or broken state removed)."""
    ckpt, fp = out_dir / "last.ckpt", out_dir / "fingerprint.txt"
    if not ckpt.exists():
        return None
    if not (fp.exists() and fp.read_text().strip() == fingerprint):
        say(f"{ckpt} was written for another configuration: starting fresh")
    else:
        try:
            step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        except Exception as e:  # a truncated or foreign file: whatever it is, it cannot be resumed
            say(f"{ckpt} is unreadable ({type(e).__name__}): starting fresh")
        else:
            say(f"resuming from {ckpt} at step {step} (the data continues at that step's batch: batches are "
                "indexed by step)")
            return ckpt
    ckpt.unlink()
    return None


def fit(module: pl.LightningModule, datamodule: pl.LightningDataModule, tcfg, out_dir: Path, *,
        fingerprint: str, mlflow_run: tuple[str, str] | None = None, say=print) -> tuple[pl.Trainer, MetricHistory]:
    """Train `module` for tcfg.max_steps; returns the trainer and the metric history.

    tcfg needs: max_steps, val_every, val_batches, log_every, ckpt_every, precision, accelerator, devices,
    num_nodes, strategy, accumulate_grad_batches, compile. mlflow_run: (tracking_uri, run_id). Gradient
    clipping is the module's (its optim config's grad_clip, see `tinylm.training.base`), never Lightning's,
    which refuses fused optimizers under mixed precision. The progress bar refreshes on logging steps only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = resume_path(out_dir, fingerprint, say)
    history = MetricHistory(tcfg.log_every)
    callbacks = [history, _ProgressBar(refresh_rate=tcfg.log_every * tcfg.accumulate_grad_batches),
                 _StepCheckpoint(dirpath=out_dir, save_last=True, save_top_k=0, every_n_train_steps=tcfg.ckpt_every,
                                 enable_version_counter=False)]
    logger = MLFlowLogger(tracking_uri=mlflow_run[0], run_id=mlflow_run[1]) if mlflow_run else False
    if tcfg.compile:
        module.model.compile()
    trainer = pl.Trainer(
        max_steps=tcfg.max_steps, max_epochs=-1, val_check_interval=tcfg.val_every * tcfg.accumulate_grad_batches,
        check_val_every_n_epoch=None, limit_val_batches=tcfg.val_batches, num_sanity_val_steps=0,
        log_every_n_steps=tcfg.log_every, precision=tcfg.precision, accelerator=tcfg.accelerator,
        devices=tcfg.devices, num_nodes=tcfg.num_nodes, strategy=tcfg.strategy,
        accumulate_grad_batches=tcfg.accumulate_grad_batches,
        callbacks=callbacks, logger=logger, default_root_dir=out_dir, enable_model_summary=False,
        use_distributed_sampler=False, deterministic=False, enable_progress_bar=True,
    )
    if trainer.is_global_zero:
        (out_dir / "fingerprint.txt").write_text(fingerprint + "\n")
    with warnings.catch_warnings():  # resume_path said what resumes: batches are indexed by step, not by an
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")  # iterator
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    if trainer.global_step % tcfg.val_every:  # always end with a validation of the final weights
        trainer.validate(module, datamodule=datamodule, verbose=False)  # MetricHistory records it
    trainer.save_checkpoint(out_dir / "last.ckpt", weights_only=False)  # full state: resumable
    return trainer, history


def set_threads(n: int) -> None:
    """Pin intra-op threads (oversubscribing a small CPU is up to 18x slower)."""
    if n > 0:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
