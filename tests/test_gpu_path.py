"""The `trainer=gpu` code path, run on CPU so CI sees what a GPU user would: bf16-mixed, the fused AdamW that
CUDA gets, gradient clipping, torch.compile; compiled gradients equal eager ones; no host sync between
logging steps."""

import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tinylm.data.windows import FixedWindows, RandomWindows
from tinylm.models import presets
from tinylm.pipeline.config import load_config
from tinylm.training.causal_lm import CausalLMModule
from tinylm.training.datamodules import StepDataModule
from tinylm.training.fit import fit
from tinylm.training.optim import OptimConfig

ROOT = Path(__file__).resolve().parents[1]
V, T = 96, 32
TOKENS = torch.randint(0, V, (20_000,), generator=torch.Generator().manual_seed(0)).numpy()
TOKENS[1::2] = (TOKENS[::2] * 7 + 3) % V  # every odd token follows from the one before: learnable


def gpu_trainer(**overrides):
    """trainer=gpu as composed from conf/, moved to the CPU (everything else as a GPU user gets it)."""
    over = {"accelerator": "cpu", "devices": 1, "max_steps": 8, "warmup_steps": 2, "val_every": 4,
            "val_batches": 1, "log_every": 2, "ckpt_every": 4, "batch_size": 8, "num_workers": 0, **overrides}
    cfg = load_config(["trainer=gpu", *(f"trainer.{k}={v}" for k, v in over.items())], conf_dir=ROOT / "conf")
    return cfg.trainer


def module_and_data(tcfg, fused=True, n_layer=2):
    mcfg = presets("gpt2", vocab_size=V, block_size=T, n_layer=n_layer, n_head=2, n_embd=32).to_dict()
    optim = {**vars(OptimConfig.of(tcfg)), "fused": fused}  # fused: the AdamW built for CUDA
    module = CausalLMModule(mcfg, optim, seed=tcfg.seed)
    dm = StepDataModule(RandomWindows(TOKENS, T, tcfg.batch_size, 0), FixedWindows(TOKENS, T, tcfg.batch_size, 1),
                        batch_size=None, seed=0, max_steps=tcfg.max_steps)
    return module, dm


def test_gpu_trainer_config_trains_on_cpu(tmp_path, capsys):
    tcfg = gpu_trainer()
    assert (tcfg.precision, tcfg.compile, tcfg.grad_clip) == ("bf16-mixed", True, 1.0)
    module, dm = module_and_data(tcfg)
    trainer, history = fit(module, dm, tcfg, tmp_path, fingerprint="gpu", say=lambda *_: None)
    opt = trainer.optimizers[0]
    assert opt.defaults["fused"] and trainer.gradient_clip_val is None  # the module clips, not Lightning
    assert [r["step"] for r in history.train] == [2, 4, 6, 8]
    assert "attention: sdpa (flash_attention on cpu, torch.bfloat16)" in capsys.readouterr().out
    assert history.val[-1]["val/loss"] < history.val[0]["val/loss"]
    assert all(r["train/grad_norm"] > 0 for r in history.train)
    first = torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert any("_orig_mod" in k for k in first) or all(torch.isfinite(v).all() for v in first.values())


def test_clipping_bounds_the_update_with_a_fused_optimizer():
    """With grad_clip the gradients reaching the (fused) optimizer have norm <= grad_clip."""
    tcfg = gpu_trainer(grad_clip=0.01)
    module, _ = module_and_data(tcfg)
    batch = RandomWindows(TOKENS, T, 4, 0)[0]
    module.training_step(batch, 0).backward()
    before = torch.nn.utils.get_total_norm([p.grad for p in module.parameters()])
    module.on_before_optimizer_step(SimpleNamespace(param_groups=[{"lr": 1.0, "params": list(module.parameters())}]))
    after = torch.nn.utils.get_total_norm([p.grad for p in module.parameters()])
    assert before > 0.01 and after == pytest.approx(0.01, rel=1e-4)


@pytest.mark.slow
def test_compiled_training_step_equals_eager():
    """The real CausalLMModule training step (fused output layer + loss, bf16 autocast): gradients of the
    compiled model equal the eager ones (under compile on CUDA they were once all zero)."""
    tcfg = gpu_trainer()
    eager, _ = module_and_data(tcfg)
    compiled, _ = module_and_data(tcfg)
    compiled.load_state_dict(eager.state_dict())
    compiled.model.compile()
    batch = RandomWindows(TOKENS, T, 4, 0)[0]
    for m in (eager, compiled):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            m.training_step(batch, 0).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert b.grad is not None and b.grad.abs().sum() > 0, name
        torch.testing.assert_close(b.grad, a.grad, rtol=2e-2, atol=2e-4, msg=name)


def test_no_host_sync_between_logging_steps(tmp_path, monkeypatch):
    """Every tensor -> Python conversion (the host syncs of a GPU) inside a training step happens on a
    logging step: losses, grad norm, lr, tokens/s and the non-finite check read nothing in between."""
    tcfg = gpu_trainer(precision="32-true", compile=False, max_steps=12, log_every=4, val_every=12, ckpt_every=12)
    module, dm = module_and_data(tcfg)
    state = {"step": None, "syncs": []}

    def loading_data():  # the data loader's host tensors never live on the device
        f = sys._getframe(2)
        while f is not None and "torch/utils/data/" not in f.f_code.co_filename:
            f = f.f_back
        return f is not None

    def spy(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **kw):
            if state["step"] is not None and not loading_data():
                state["syncs"].append((state["step"], name))
            return original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        spy(name)
    start = module.on_train_batch_start

    def on_start(batch, i):  # everything until the next batch starts counts for this step (the loop's own
        state["step"] = module.global_step + 1  # bookkeeping, callbacks and the progress bar included)
        return start(batch, i)
    monkeypatch.setattr(module, "on_train_batch_start", on_start)
    fit(module, dm, tcfg, tmp_path, fingerprint="sync", say=lambda *_: None)
    steps = {s for s, _ in state["syncs"]}
    assert steps and steps <= {4, 8, 12}, sorted(state["syncs"])


@pytest.mark.slow
def test_pretrain_stage_runs_on_the_gpu_box(smoke_repo, gpu_box, tmp_path):
    """The GPU runtime lacks mlflow, hydra-core, omegaconf, dvc, datasets, matplotlib, ...: with `tracking:
    false` in params.yaml the pretraining stage runs there all the same, and logs val/bpb."""
    import json
    import shutil
    import subprocess

    import yaml

    repo, env = smoke_repo
    work = tmp_path / "repo"
    for part in ("pipelines", "data/tokens", "artifacts/tokenizer"):
        shutil.copytree(repo / part, work / part)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"] = False
    params["trainer"].update(max_steps=6, warmup_steps=1, val_every=3, ckpt_every=3, log_every=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = subprocess.run([str(gpu_box), "pipelines/pretrain.py", "decoder"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((work / "reports/decoder/metrics.json").read_text())
    assert metrics["steps"] == 6 and 0 < metrics["val_bpb"] < 8
    assert not (work / "mlflow.db").exists() and not (work / "reports/decoder/loss.png").exists()


@pytest.mark.slow
def test_gpu_script_prepares_on_cpu_and_runs_on_the_gpu_box(smoke_repo, gpu_box, tmp_path):
    """benchmarks/gpu.py as the GPU session uses it: `--prepare` here (run by a venv's python with that venv
    off PATH, as `.venv/bin/python benchmarks/gpu.py --prepare .gpu` is), then `--dry-run` on the carried folder
    by the GPU box's python: every section but the CUDA-only attention timings and the compiled rows (the
    compiled step is tested above), at tiny shapes on the CPU, the pretrain section running the real stage on
    the carried experiment=gpu tokens for 4 steps."""
    import os
    import subprocess

    from tinylm.nn import triton_attention as ta

    _, env = smoke_repo
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    carry, out_md = tmp_path / "carry", tmp_path / "gpu.md"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--prepare", str(carry)], cwd=ROOT,
                         env={**env, "PATH": path}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p.name for p in (carry / "data/tokens").iterdir()} == {"train.bin", "val.bin", "test.bin", "meta.json"}
    out = subprocess.run([str(gpu_box), str(ROOT / "benchmarks/gpu.py"), "--dry-run", "--carry", str(carry),
                          "--out", str(out_md), "--compile", "off", "--sections", "env", "chunks", "throughput",
                          "pretrain", "tests"], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT / "src")},
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = out_md.read_text()
    if not ta.INTERPRETER_RUNS:  # the triton row says why it cannot run here (the GPU box compiles the kernels)
        assert "attention=triton | False | RuntimeError: Triton" in report, report
        report = "\n".join(line for line in report.splitlines() if "attention=triton" not in line)
    else:
        assert re.search(r"\| tinylm GPT, plain loop, attention=triton \| False \| [\d.]+ \|", report)  # interpreted
    assert "Traceback" not in report and "error" not in report.lower(), report
    assert "| tinylm CausalLMModule + fit (trainer=gpu) | False |" in report
    assert "pretrain stage, 6 x 384, block 256" in report and "| 4 |" in report  # experiment=gpu, its val rows
    assert re.search(r"\d+ skipped", report.split("### pytest -m gpu")[1]), report  # GPU_TESTS collected


def test_gpu_script_runs_every_gpu_test(request):
    """gpu.py's GPU_TESTS holds every test marked gpu (in the tests this session collected: all, in CI)."""
    gpu_tests = runpy.run_path(str(ROOT / "benchmarks/gpu.py"))["GPU_TESTS"]
    marked = {str(item.path.relative_to(ROOT)) for item in request.session.items if "gpu" in item.keywords}
    assert marked <= set(gpu_tests), sorted(marked - set(gpu_tests))


def test_fsdp_clips_with_the_collective_norm_of_all_shards():
    """Under FSDP a rank holds a shard of each gradient: clipping must use the sharded root's own
    clip_grad_norm_ (all ranks' norm), never a local one. Lightning refuses FSDP without a GPU, so this
    checks the dispatch with a stand-in root."""
    tcfg = gpu_trainer(grad_clip=0.5)
    module, _ = module_and_data(tcfg)
    calls = []
    root = SimpleNamespace(clip_grad_norm_=lambda max_norm: calls.append(max_norm) or torch.tensor(3.0))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(model=root), precision_plugin=SimpleNamespace(),
                                      global_step=0, log_every_n_steps=2, max_steps=10)  # step 1: not a logging step
    module.training_step(RandomWindows(TOKENS, T, 4, 0)[0], 0).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.on_before_optimizer_step(SimpleNamespace(param_groups=[{"lr": 1.0, "params": list(module.parameters())}]))
    assert calls == [0.5]
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, module.parameters(), strict=True))  # root clipped


FSDP_DECAY = """
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp

def work(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from tinylm.models import build_model, presets
    from tinylm.nn.block import Block
    from tinylm.training.optim import param_groups
    torch.manual_seed(0)
    model = build_model(presets("gpt2", vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    dims = {id(p): p.dim() for p in model.parameters()}  # what TinyLMModule.setup records
    before = [[id(p) for p in g["params"]] for g in param_groups(model, 0.1)]
    FSDP(model, use_orig_params=True, device_id=torch.device("cpu"), auto_wrap_policy=ModuleWrapPolicy({Block}))
    assert {p.dim() for p in model.parameters()} == {1}, "FSDP shards every parameter to 1-D"
    after = [[id(p) for p in g["params"]] for g in param_groups(model, 0.1, dims=dims)]
    unrecorded = [len(g["params"]) for g in param_groups(model, 0.1)]
    # one write(2) of a line: two ranks' prints (text, then newline) once interleaved on the shared pipe
    os.write(1, f"rank {rank}: same groups {after == before}; without the record {unrecorded}\\n".encode())
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(work, args=(int(sys.argv[1]),), nprocs=2)
"""


def test_weight_decay_picks_the_same_parameters_from_fsdp_shards(tmp_path):
    """FSDP (use_orig_params, as Lightning's) leaves each parameter a 1-D shard; weight decay goes by the
    dimensions recorded before wrapping, so the groups are those of the unwrapped model (two gloo processes)."""
    import socket
    import subprocess

    script = tmp_path / "fsdp_decay.py"
    script.write_text(FSDP_DECAY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = sorted(x for x in out.stdout.splitlines() if x.startswith("rank"))
    assert lines == [f"rank {r}: same groups True; without the record [0, 28]" for r in (0, 1)], out.stdout


def test_muon_is_refused_under_fsdp_before_any_work():
    from tinylm.pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="muon cannot run under strategy fsdp"):
        load_config(["trainer.strategy=fsdp"], conf_dir=ROOT / "conf").trainer_for("decoder")
    module, _ = module_and_data(gpu_trainer(optimizer="muon"))
    module._trainer = SimpleNamespace(strategy=type("FSDPStrategy", (), {})())
    with pytest.raises(ValueError, match="optimizer muon cannot run under FSDP"):
        module.configure_optimizers()


@pytest.mark.slow
def test_gpu_script_keeps_to_its_budget(tmp_path):
    """The lent GPU allows 600 s per command: a section or throughput row that would start after --budget is
    skipped and named, and a subprocess still running when it runs out is stopped with what it printed so far."""
    import subprocess
    import time

    gpu = runpy.run_path(str(ROOT / "benchmarks/gpu.py"))
    a = SimpleNamespace(deadline=time.perf_counter() + 1, device="cpu", partial=set(), current="tests")
    out = gpu["run_script"](a, [sys.executable, "-c", "print('row 1', flush=True); import time; time.sleep(60)"], 240)
    assert out.returncode == -9 and out.stdout == "row 1\n" and out.stderr.endswith("stopped after 1 s")
    assert a.partial == {"tests"}  # named in the rerun hint
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--dry-run", "--budget", "0",
                          "--sections", "env", "tests"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "--budget 0 s spent; not run: rerun with --sections env tests"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--dry-run", "--budget", "29",
                          "--sections", "env", "throughput", "--compile", "off"], capture_output=True, text=True,
                         timeout=120)  # the imports count: env and throughput start, each eager row wants 30 s
    assert out.returncode == 0, out.stderr
    assert "| tinylm GPT, plain loop | False | skipped: under 30 s of --budget left |" in out.stdout
    assert out.stdout.strip().endswith("not run (or in part): rerun with --sections throughput"), out.stdout
