"""Run one training stage with Lightning: resumable, seeded, logged to MLflow, scaled by Lightning's own
strategies (`ddp`, `fsdp`, torchrun or SLURM launch) — nothing distributed is written here.

Resume rule: `out_dir/last.ckpt` is reused only when `out_dir/fingerprint.txt` equals this run's config
fingerprint; otherwise the directory's checkpoint is discarded (with a message) and training starts fresh.
Checkpoints are saved every `ckpt_every` steps (after that step's validation, if it has one) and at the end,
written atomically (a temporary file, then a rename), and loaded with weights_only=True. So a SIGKILL at any
moment resumes to the uninterrupted run's weights, metrics and history, bit for bit (tests/test_fit.py).
"""

import copy
import os
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO

from tinylm.training.history import MetricHistory


class _StepCheckpoint(pl.Callback):
    """Writes out_dir/last.ckpt every `every` optimizer steps, always after everything that step does: a step
    that validates is saved after its validation (which MetricHistory, listed before this callback, has
    recorded). Lightning does not rerun a validation on resume, so a checkpoint taken before one would
    resume with that validation row missing from the history. Holds no state (no paths in the checkpoint)."""

    def __init__(self, path: Path, every: int, val_every: int):
        self.path, self.every, self.val_every = path, every, val_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0  # this micro-batch ended an optimizer step
        if stepped and step % self.every == 0 and step % self.val_every:
            save_checkpoint(trainer, pl_module, self.path)

    def on_validation_end(self, trainer, pl_module):
        step = trainer.global_step  # the same on every rank: saving is collective under DDP
        if trainer.state.fn == "fit" and not trainer.sanity_checking and step % self.every == 0:
            save_checkpoint(trainer, pl_module, self.path)


def save_checkpoint(trainer: pl.Trainer, module, path: Path) -> None:
    """The full, resumable state to `path`, never with non-finite weights (module.raise_if_not_finite first)."""
    module.raise_if_not_finite(weights=True)
    trainer.save_checkpoint(path, weights_only=False)


class _CheckpointIO(TorchCheckpointIO):
    """Saves a canonical copy of the checkpoint atomically: torch.save to a temporary file, then os.replace, so
    a kill mid-write leaves the previous checkpoint whole. The temporary name is fixed (`<name>.tmp`), not
    `tinylm.atomic.atomic_file`'s unique one: a SIGKILL mid-write leaves it behind, and the next save writes
    over it instead of leaving one more checkpoint-sized orphan per kill. Canonical: pickle shares one copy of
    an object met twice, so equal strings that happen to be one object (a key of a fresh optimizer) or two (the
    same key loaded from a checkpoint) give different bytes; with every string interned and every container
    rebuilt, the bytes depend on the content alone, and a resumed run's checkpoint equals the uninterrupted
    run's."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        super().save_checkpoint(_canonical(checkpoint), tmp, storage_options)
        os.replace(tmp, path)


def _canonical(obj):
    """obj with str interned and dicts, lists and tuples rebuilt (their types kept); anything else as is."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        out = copy.copy(obj)
        out.clear()
        out.update((_canonical(k), _canonical(v)) for k, v in obj.items())
        return out
    if isinstance(obj, list | tuple) and type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


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


def resolve_precision(precision: str, accelerator: str) -> tuple[str, str]:
    """Lightning's precision for `precision`, and why. "auto": bf16 autocast ("bf16-mixed") where the hardware
    computes in bf16 (a CUDA GPU that supports it; a CPU with AMX or AVX512-BF16), else "32-true" (a CPU without
    them emulates bf16, slower than fp32). Any other value is returned as it is."""
    if precision != "auto":
        return precision, "as configured"
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ("bf16-mixed", "the GPU computes in bf16") if bf16 else ("32-true", "no bf16 on this GPU")
    if accelerator not in ("cpu", "auto"):
        return "32-true", f"no bf16 detection for accelerator {accelerator!r}"
    units = [name for name, has in (("AMX", getattr(torch.cpu, "_is_amx_tile_supported", None)),
                                     ("AVX512-BF16", getattr(torch.cpu, "_is_avx512_bf16_supported", None)))
             if has is not None and has()]
    return ("bf16-mixed", f"the CPU has {' and '.join(units)}") if units else \
        ("32-true", "the CPU has neither AMX nor AVX512-BF16")


def check_accelerator(accelerator: str, attention: str = "sdpa") -> None:
    """Raise ValueError naming the cause and the fix when `accelerator` asks for a GPU this torch cannot use
    (Lightning's own error says only "No supported gpu backend found!"), or when the model's attention kernel
    is Triton's and the run is not on a CUDA GPU (unless TRITON_INTERPRET=1: the kernels then run, slowly, in
    Triton's interpreter). Lightning's "gpu" is CUDA, or Apple's MPS on a Mac; "cuda" is CUDA only."""
    on_cuda = torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto")
    if attention == "triton" and not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"attention=triton runs on a CUDA GPU, and this run is not on one (trainer.accelerator="
                         f"{accelerator}, CUDA {'available' if torch.cuda.is_available() else 'unavailable'}): use "
                         "attention=sdpa or flash here, or a CUDA GPU with trainer.accelerator=gpu")
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if accelerator == "gpu" and torch.backends.mps.is_available():
        return
    why = "is a CPU-only build" if torch.version.cuda is None else \
        f"was built for CUDA {torch.version.cuda} but finds no CUDA device"
    raise ValueError(f"trainer.accelerator={accelerator}, but torch {torch.__version__} {why}: run on a machine "
                     "with an NVIDIA GPU and a CUDA build of torch, or train on the CPU (-S trainer=cpu, or "
                     "trainer.accelerator=auto)")


CLUSTER_MARKERS = ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def check_nodes(num_nodes: int) -> None:
    """ValueError when num_nodes > 1 without a launcher that tells each process its node (torchrun, SLURM, LSF,
    MPI, or Lightning's NODE_RANK): Lightning would wait, silently and for ever, for the other nodes."""
    if num_nodes > 1 and not any(k in os.environ for k in CLUSTER_MARKERS):
        raise ValueError(f"trainer.num_nodes={num_nodes}, but no launcher set this process's node (none of "
                         f"{', '.join(CLUSTER_MARKERS)} is set), so it would wait for ever for the other nodes: start "
                         "it on every node under torchrun or srun (README: Scaling up), or set trainer.num_nodes=1")


def fit(module: pl.LightningModule, datamodule: pl.LightningDataModule, tcfg, out_dir: Path, *,
        fingerprint: str, mlflow_run: tuple[str, str] | None = None, say=print) -> tuple[pl.Trainer, MetricHistory]:
    """Train `module` for tcfg.max_steps; returns the trainer and the metric history.

    tcfg needs: max_steps, val_every, val_batches, log_every, ckpt_every, precision, accelerator, devices,
    num_nodes, strategy, accumulate_grad_batches, compile. mlflow_run: (tracking_uri, run_id). Gradient
    clipping is the module's (its optim config's grad_clip, see `tinylm.training.base`), never Lightning's,
    which refuses fused optimizers under mixed precision. The progress bar refreshes on logging steps only.
    """
    model_config = getattr(getattr(module, "model", None), "config", None)  # tinylm's modules have one
    check_accelerator(tcfg.accelerator, getattr(model_config, "attention", "sdpa"))
    check_nodes(tcfg.num_nodes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision, why = resolve_precision(tcfg.precision, tcfg.accelerator)
    if tcfg.precision == "auto":
        say(f"precision auto: {precision} ({why})")
    ckpt = resume_path(out_dir, fingerprint, say)
    history = MetricHistory(tcfg.log_every)
    callbacks = [history, _ProgressBar(refresh_rate=tcfg.log_every * tcfg.accumulate_grad_batches),
                 _StepCheckpoint(out_dir / "last.ckpt", tcfg.ckpt_every, tcfg.val_every)]
    logger = MLFlowLogger(tracking_uri=mlflow_run[0], run_id=mlflow_run[1]) if mlflow_run else False
    if tcfg.compile:
        module.model.compile()
    trainer = pl.Trainer(
        max_steps=tcfg.max_steps, max_epochs=-1, val_check_interval=tcfg.val_every * tcfg.accumulate_grad_batches,
        check_val_every_n_epoch=None, limit_val_batches=tcfg.val_batches, num_sanity_val_steps=0,
        log_every_n_steps=tcfg.log_every, precision=precision, accelerator=tcfg.accelerator,
        devices=tcfg.devices, num_nodes=tcfg.num_nodes, strategy=tcfg.strategy,
        accumulate_grad_batches=tcfg.accumulate_grad_batches,
        callbacks=callbacks, logger=logger, default_root_dir=out_dir, enable_model_summary=False,
        enable_checkpointing=False, plugins=[_CheckpointIO()],
        use_distributed_sampler=False, deterministic=False, enable_progress_bar=True,
    )
    if trainer.is_global_zero:
        (out_dir / "fingerprint.txt").write_text(fingerprint + "\n")
    with warnings.catch_warnings():  # resume_path said what resumes: batches are indexed by step, not by an
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")  # iterator
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    if trainer.global_step % tcfg.val_every:  # always end with a validation of the final weights
        trainer.validate(module, datamodule=datamodule, verbose=False)  # MetricHistory records it
    save_checkpoint(trainer, module, out_dir / "last.ckpt")
    return trainer, history


def set_threads(n: int) -> None:
    """Pin intra-op threads (oversubscribing a small CPU is up to 18x slower)."""
    if n > 0:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
