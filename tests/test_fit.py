"""`fit`: bit-exact reruns, resume after a hard kill, fingerprints, gradient accumulation, history files."""

import math
import os
import runpy
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from tinylm.training.fit import check_accelerator, fit, resolve_precision, resume_path
from tinylm.training.history import MetricHistory
from tinylm.training.optim import lr_at

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

# One script serves every run: imported here (runpy) for in-process runs, run as a subprocess to be killed.
SCRIPT = '''
import os, signal, sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytorch_lightning as pl
import torch

from tinylm.models import presets
from tinylm.training.causal_lm import CausalLMModule
from tinylm.data.windows import FixedWindows, RandomWindows
from tinylm.training.datamodules import StepDataModule
from tinylm.training.fit import fit

TOKENS = (np.arange(8000) % 37).astype(np.uint16)  # a learnable periodic stream
VAL = (np.arange(7, 2007) % 37).astype(np.uint16)


class KillAt(CausalLMModule):
    """Dies by SIGKILL (no cleanup, no final checkpoint) when optimizer step `kill_at` is about to start, or
    with kill_in_validation, when the validation after step `kill_at` starts."""
    kill_at, kill_in_validation = None, False

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.kill_at and not self.kill_in_validation:
            os.kill(os.getpid(), signal.SIGKILL)
        super().on_train_batch_start(batch, batch_idx)

    def on_validation_start(self):
        if self.global_step == self.kill_at and self.kill_in_validation:
            os.kill(os.getpid(), signal.SIGKILL)


def run(out_dir, *, max_steps=20, accumulate=1, kill_at=None, kill_in_validation=False, fingerprint="fp", say=print,
        precision="32-true"):
    torch.set_num_threads(1)
    pl.seed_everything(1, verbose=False)
    cfg = presets("gpt2", vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1).to_dict()
    optim = dict(lr=3e-3, min_lr=3e-4, weight_decay=0.1, warmup_steps=3, max_steps=max_steps, grad_clip=1.0)
    module = KillAt(cfg, optim, seed=1)
    module.kill_at, module.kill_in_validation = kill_at, kill_in_validation
    dm = StepDataModule(RandomWindows(TOKENS, 16, 4, seed=1), FixedWindows(VAL, 16, 4, 2), batch_size=None,
                        seed=1, max_steps=max_steps, accumulate=accumulate)
    tcfg = SimpleNamespace(max_steps=max_steps, val_every=5, val_batches=2, log_every=1, ckpt_every=5,
                           precision=precision, accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                           accumulate_grad_batches=accumulate, compile=False)
    trainer, history = fit(module, dm, tcfg, Path(out_dir), fingerprint=fingerprint, say=say)
    return module, trainer, history


if __name__ == "__main__":
    run(sys.argv[1], kill_at=int(sys.argv[2]), accumulate=int(sys.argv[3]), kill_in_validation=sys.argv[4] == "val")
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "run_fit.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def run(script):
    return runpy.run_path(str(script))["run"]


@pytest.fixture(scope="module")
def reference(run, tmp_path_factory):
    """An uninterrupted 20-step run."""
    out = tmp_path_factory.mktemp("reference")
    module, trainer, history = run(out, say=lambda *_: None)
    return out, module, history


def weights(module):
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def steps(rows):
    return [r["step"] for r in rows]


def test_reference_run_learns_and_records_every_step(reference):
    _, module, history = reference
    assert steps(history.train) == list(range(1, 21))
    assert steps(history.val) == [5, 10, 15, 20]
    assert history.val[-1]["val/loss"] < history.val[0]["val/loss"] - 0.3
    assert history.val[-1]["val/ppl"] == pytest.approx(math.exp(history.val[-1]["val/loss"]), rel=1e-6)
    assert history.train[2]["train/lr"] == pytest.approx(lr_at(2, 3e-3, 3e-4, 3, 20))


def test_same_params_give_identical_results(run, reference, tmp_path):
    _, ref_module, ref_history = reference
    module, _, history = run(tmp_path, say=lambda *_: None)
    assert history.val == ref_history.val  # exact floats
    assert_same_weights(weights(module), weights(ref_module))


@pytest.mark.slow
@pytest.mark.parametrize(("kill_at", "accumulate", "where"), [(8, 1, "train"), (12, 2, "train"), (10, 1, "val")])
def test_resume_after_sigkill_is_bit_exact(script, run, reference, tmp_path, kill_at, accumulate, where):
    """where="val": killed in the validation of a checkpoint step, so it resumes from the step before
    (a checkpoint is written after its step's validation, never before it)."""
    if accumulate == 1:
        ref_dir, ref_module, ref_history = reference
    else:
        ref_dir = tmp_path / "reference"
        ref_module, _, ref_history = run(ref_dir, accumulate=accumulate, say=lambda *_: None)
    out = tmp_path / "resumed"
    proc = subprocess.run([sys.executable, str(script), str(out), str(kill_at), str(accumulate), where],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = torch.load(out / "last.ckpt", weights_only=True, map_location="cpu")
    resumed_at = kill_at // 5 * 5 - 5 * (where == "val")  # the last checkpoint before the kill (ckpt_every=5)
    assert ckpt["global_step"] == resumed_at
    said = []
    module, trainer, history = run(out, accumulate=accumulate, say=said.append)
    assert said == [f"resuming from {out / 'last.ckpt'} at step {resumed_at} (the data continues at that "
                    "step's batch: batches are indexed by step)"]
    assert trainer.global_step == 20
    assert history.val == ref_history.val
    assert_same_weights(weights(module), weights(ref_module))
    assert steps(history.train) == list(range(1, 21))  # each step exactly once
    for ours, theirs in zip(history.train, ref_history.train, strict=True):
        for key in ("train/loss", "train/lr", "train/grad_norm"):
            assert ours[key] == theirs[key], (ours["step"], key)
    assert (out / "last.ckpt").read_bytes() == (ref_dir / "last.ckpt").read_bytes()  # in another folder, too


def test_fingerprint_mismatch_starts_fresh(run, reference, tmp_path):
    ref_dir, ref_module, ref_history = reference
    shutil.copy(ref_dir / "last.ckpt", tmp_path / "last.ckpt")
    shutil.copy(ref_dir / "fingerprint.txt", tmp_path / "fingerprint.txt")
    said = []
    module, trainer, history = run(tmp_path, fingerprint="changed", say=said.append)
    assert said == [f"{tmp_path / 'last.ckpt'} was written for another configuration: starting fresh"]
    assert (tmp_path / "fingerprint.txt").read_text() == "changed\n"
    assert steps(history.train) == list(range(1, 21))  # trained from step 0, not resumed
    assert history.val == ref_history.val
    assert_same_weights(weights(module), weights(ref_module))


def test_resume_path(tmp_path):
    said, ckpt = [], tmp_path / "last.ckpt"
    assert resume_path(tmp_path, "a", said.append) is None and said == []
    torch.save({"global_step": 7}, ckpt)
    (tmp_path / "fingerprint.txt").write_text("a\n")
    assert resume_path(tmp_path, "a", said.append) == ckpt
    assert resume_path(tmp_path, "b", said.append) is None
    assert not ckpt.exists()  # stale state removed
    ckpt.write_bytes(b"x")  # e.g. truncated
    assert resume_path(tmp_path, "a", said.append) is None and not ckpt.exists()
    assert said == [f"resuming from {ckpt} at step 7 (the data continues at that step's batch: batches are indexed "
                    "by step)", f"{ckpt} was written for another configuration: starting fresh",
                    f"{ckpt} is unreadable (RuntimeError): starting fresh"]


def test_gradient_accumulation(run, tmp_path):
    module, trainer, history = run(tmp_path, max_steps=8, accumulate=2, say=lambda *_: None)
    assert trainer.global_step == 8
    assert steps(history.train) == list(range(1, 9))  # one row per optimizer step
    assert steps(history.val) == [5, 8]  # every val_every steps, and always the final weights
    # the schedule advances once per optimizer step, not per micro-batch
    lrs = [lr_at(s, 3e-3, 3e-4, 3, 8) for s in range(8)]
    assert [r["train/lr"] for r in history.train] == pytest.approx(lrs)
    assert history.val[-1]["val/loss"] < history.val[0]["val/loss"]
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 8
    saved = [state for key, state in ckpt["callbacks"].items() if "MetricHistory" in key]
    assert saved == [history.state_dict()]


def test_rerunning_a_finished_run_changes_nothing(run, reference, tmp_path):
    ref_dir, ref_module, ref_history = reference
    for name in ("last.ckpt", "fingerprint.txt"):
        shutil.copy(ref_dir / name, tmp_path / name)
    said = []
    module, trainer, history = run(tmp_path, say=said.append)
    assert said == [f"resuming from {tmp_path / 'last.ckpt'} at step 20 (the data continues at that step's batch: "
                    "batches are indexed by step)"]
    assert trainer.global_step == 20
    assert history.train == ref_history.train and history.val == ref_history.val
    assert_same_weights(weights(module), weights(ref_module))


def test_history_write(reference, tmp_path):
    _, _, history = reference
    history.write(tmp_path / "plots")
    train = (tmp_path / "plots" / "train.csv").read_text().splitlines()
    val = (tmp_path / "plots" / "val.csv").read_text().splitlines()
    header = train[0].split(",")
    assert header[0] == "step" and {"train/loss", "train/lr", "train/grad_norm"} <= set(header)
    assert len(train) == 1 + 20 and train[1].split(",")[0] == "1"
    assert val[0] == "step,val/loss,val/ppl" and len(val) == 1 + 4
    loss = float(val[-1].split(",")[1])
    assert loss == history.val[-1]["val/loss"]
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "plots").glob("*.tmp*"))


def test_history_write_without_matplotlib_writes_the_csvs_and_no_stale_plot(reference, tmp_path, monkeypatch):
    """The lent GPU machine has no matplotlib: the CSVs are written, a loss.png from an earlier run is removed
    (it would not match them), and the user is told why."""
    _, _, history = reference
    (tmp_path / "loss.png").write_bytes(b"old")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        history.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv", "val.csv"]


def test_history_state_roundtrip():
    h = MetricHistory(log_every=2)
    h.train, h.val = [{"step": 2, "train/loss": 1.0}], [{"step": 2, "val/loss": 1.5}]
    g = MetricHistory(log_every=2)
    g.load_state_dict(h.state_dict())
    assert g.train == h.train and g.val == h.val and g.train is not h.train


def test_resolve_precision_picks_bf16_only_where_the_hardware_computes_in_it(monkeypatch):
    def hardware(amx=False, avx512_bf16=False, cuda=False, cuda_bf16=False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)

    hardware(amx=True, avx512_bf16=True)
    assert resolve_precision("16-mixed", "cpu") == ("16-mixed", "as configured")
    assert resolve_precision("auto", "cpu") == ("bf16-mixed", "the CPU has AMX and AVX512-BF16")
    hardware(avx512_bf16=True)
    assert resolve_precision("auto", "auto") == ("bf16-mixed", "the CPU has AVX512-BF16")
    hardware()
    assert resolve_precision("auto", "cpu") == ("32-true", "the CPU has neither AMX nor AVX512-BF16")
    assert resolve_precision("auto", "mps")[0] == "32-true"
    hardware(cuda=True, cuda_bf16=True)
    assert resolve_precision("auto", "gpu") == resolve_precision("auto", "auto") == ("bf16-mixed",
                                                                                    "the GPU computes in bf16")
    hardware(amx=True, cuda=True)  # a V100 on a Xeon: the GPU decides
    assert resolve_precision("auto", "cuda") == ("32-true", "no bf16 on this GPU")


def test_a_gpu_torch_cannot_use_is_refused_before_any_work(monkeypatch, tmp_path):
    """trainer=gpu where torch has no GPU: one error naming torch's build and the fix (Lightning's own says "No
    supported gpu backend found!"), before fit makes its folder; a pipeline stage says it as a config error,
    before it reads its data."""
    from types import SimpleNamespace

    from tinylm.pipeline.training_stage import prepare

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match=r"^trainer.accelerator=gpu, but torch \S+ is a CPU-only build: run on a "
                                         r"machine with an NVIDIA GPU .* \(-S trainer=cpu, or trainer.accelerator"):
        fit(None, None, SimpleNamespace(accelerator="gpu"), tmp_path / "out", fingerprint="x")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(SystemExit, match=r"^config error: trainer.accelerator=cuda, but torch \S+ was built for "
                                         r"CUDA 12.8 but finds no CUDA device"):
        prepare(SimpleNamespace(accelerator="cuda", num_threads=0, seed=0))
    check_accelerator("cpu")  # nothing asked of a GPU
    check_accelerator("auto")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_accelerator("gpu")  # Lightning's "gpu" is MPS on a Mac
    with pytest.raises(ValueError, match="accelerator=cuda"):
        check_accelerator("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_accelerator("cuda")
    check_accelerator("auto", attention="triton")


def test_several_nodes_without_a_launcher_are_refused_instead_of_waiting_for_ever(monkeypatch):
    """trainer.num_nodes=2 started by hand on one machine hung at "Initializing distributed: MEMBER 1/2"."""
    from types import SimpleNamespace

    from tinylm.pipeline.training_stage import prepare
    from tinylm.training.fit import CLUSTER_MARKERS, check_nodes

    for k in CLUSTER_MARKERS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit, match=r"^config error: trainer.num_nodes=2, but no launcher .* under torchrun"):
        prepare(SimpleNamespace(accelerator="cpu", num_nodes=2, num_threads=0, seed=0))
    check_nodes(1)
    monkeypatch.setenv("SLURM_NTASKS", "16")
    check_nodes(2)


def test_the_triton_kernel_off_a_cuda_gpu_is_refused_before_any_work(tmp_path, monkeypatch):
    """attention=triton on the CPU failed at the first training step with a traceback from the kernel, after
    fit had made the run's folder; now fit refuses it first, naming the fix."""
    from types import SimpleNamespace

    from tinylm.models import presets
    from tinylm.training.causal_lm import CausalLMModule

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = presets("gpt2", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16, attention="triton")
    module = CausalLMModule(cfg.to_dict(), dict(lr=1e-3, min_lr=1e-4, warmup_steps=1, max_steps=2, weight_decay=0.0,
                                                grad_clip=1.0))
    with pytest.raises(ValueError, match=r"attention=triton runs on a CUDA GPU.*use attention=sdpa or flash here"):
        fit(module, None, SimpleNamespace(accelerator="cpu"), tmp_path / "out", fingerprint="x")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    check_accelerator("cpu", attention="triton")  # the interpreter runs the kernels on the CPU


@pytest.mark.parametrize("bf16", [True, False], ids=["avx512-bf16", "no-bf16"])
def test_precision_auto_trains_in_what_it_resolved_and_says_so(run, tmp_path, monkeypatch, bf16):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    said = []
    module, trainer, history = run(tmp_path, max_steps=5, precision="auto", say=said.append)
    want = "bf16-mixed" if bf16 else "32-true"
    assert trainer.precision == want
    assert said[0].startswith(f"precision auto: {want} (the CPU has ")
    assert math.isfinite(history.val[-1]["val/loss"])


def poisoned_run(out_dir, at: int, what: str, steps: int = 20, grad_clip: float = 1.0, precision: str = "32-true"):
    """The script's model and data, logging only at the end (step `steps`), a checkpoint every 5 steps,
    validation every 10: at step `at`, an inf gradient (its loss finite) or NaN weights after the step's
    clipping, or ("overflow") an inf gradient as fp16 gives. Returns the module."""
    from types import SimpleNamespace

    import numpy as np

    from tinylm.data.windows import FixedWindows, RandomWindows
    from tinylm.models import presets
    from tinylm.training.causal_lm import CausalLMModule
    from tinylm.training.datamodules import StepDataModule
    from tinylm.training.fit import fit

    class Poisoned(CausalLMModule):
        def on_after_backward(self):  # before fp16's scaler unscales (and checks) the gradients
            if self.global_step == at and what == "overflow":
                next(self.parameters()).grad.view(-1)[0] = float("inf")

        def on_before_optimizer_step(self, optimizer):
            if self.global_step == at and what == "grad":
                next(self.parameters()).grad.view(-1)[0] = float("inf")
            super().on_before_optimizer_step(optimizer)
            if self.global_step == at and what == "weights":
                with torch.no_grad():
                    next(self.parameters()).view(-1)[0] = float("nan")

    cfg = presets("gpt2", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32).to_dict()
    module = Poisoned(cfg, dict(lr=3e-3, min_lr=3e-4, weight_decay=0.1, warmup_steps=3, max_steps=steps,
                                grad_clip=grad_clip))
    tokens = (np.arange(4000) % 37).astype(np.uint16)
    dm = StepDataModule(RandomWindows(tokens, 16, 4, seed=1), FixedWindows(tokens, 16, 4, 2), batch_size=None,
                        seed=1, max_steps=steps)
    tcfg = SimpleNamespace(max_steps=steps, val_every=10, val_batches=2, log_every=100, ckpt_every=5,
                           precision=precision, accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                           accumulate_grad_batches=1, compile=False)
    fit(module, dm, tcfg, out_dir, fingerprint="fp", say=lambda *_: None)
    return module


@pytest.mark.parametrize(("at", "what", "steps", "clip", "message", "kept"), [
    (6, "grad", 20, 1.0, "non-finite training loss or gradient norm at step 6", 5),  # at the step-10 checkpoint
    (6, "grad", 20, 0.0, "non-finite training loss or gradient norm at step 6", 5),  # no clipping: the same step
    (4, "weights", 20, 1.0, "non-finite weights at step 5", None),  # before the step-5 checkpoint: none yet
    (17, "grad", 18, 1.0, "non-finite training loss or gradient norm at step 17", 15),  # the last step: before the
])  # final checkpoint (its loss was checked before its gradients existed)
def test_no_checkpoint_holds_non_finite_weights(tmp_path, at, what, steps, clip, message, kept):
    """A finite loss with inf gradients, or weights gone NaN, between logging steps or at the last one:
    training stops at the next checkpoint instead of writing it; last.ckpt, if any, is the last good one."""
    with pytest.raises(FloatingPointError, match=message):
        poisoned_run(tmp_path, at, what, steps, grad_clip=clip)
    ckpt = tmp_path / "last.ckpt"
    if kept is None:
        assert not ckpt.exists()
        return
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    assert state["global_step"] == kept
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_fp16_gradient_overflow_is_the_scalers_to_skip(tmp_path, monkeypatch):
    """Under 16-mixed, inf gradients are GradScaler's business (it skips the step and lowers its scale), not a
    fault: training goes on, with finite weights. (Lightning gives CUDA's 16-mixed a scaler, not the CPU's: the
    test adds one, as on a GPU.)"""
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    class ScaledTrainer(pl.Trainer):
        def __init__(self, *args, precision, plugins=(), **kwargs):
            assert precision == "16-mixed"
            plugins = [*plugins, MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
            super().__init__(*args, plugins=plugins, **kwargs)

    monkeypatch.setattr("tinylm.training.fit.pl.Trainer", ScaledTrainer)
    module = poisoned_run(tmp_path, 6, "overflow", 12, precision="16-mixed")
    scaler = module.trainer.precision_plugin.scaler
    assert scaler.get_scale() < 65536.0  # the overflow lowered it
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_train_loss_under_accumulation_is_the_mean_of_the_steps_micro_batches(run, tmp_path, monkeypatch):
    from tinylm.training.causal_lm import CausalLMModule

    losses, step = {}, CausalLMModule.training_step

    def recording(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        losses.setdefault(self.global_step + 1, []).append(float(loss))
        return loss

    monkeypatch.setattr(CausalLMModule, "training_step", recording)
    _, _, history = run(tmp_path, max_steps=4, accumulate=3, say=lambda *_: None)
    assert [len(losses[r["step"]]) for r in history.train] == [3] * 4  # (it logged the last one)
    assert [r["train/loss"] for r in history.train] == pytest.approx([sum(losses[r["step"]]) / 3
                                                                      for r in history.train], rel=1e-6)
