"""Every GPU figure in one run, printed as markdown for BENCHMARKS.md, in this order (most needed first):

  1. env: device, torch and CUDA, Lightning, transformers, triton
  2. compile: gradients of the real CausalLMModule training step (fused output layer + loss, bf16 autocast),
     compiled against eager, and 6 AdamW steps' losses (GPT 2 x 256, vocab 50304, B 8, T 256)
  3. chunks: the fused loss's rows per chunk, GPT-2 124M eager step (the CUDA default, 4096, came from an
     earlier GPU session's table); before our own Triton attention kernel runs in this process
  4. throughput at GPT-2 124M shapes (12 x 768, vocab 50304, B 16, T 1024, bf16), compiled then eager:
     nanoGPT's model.py (the named peer, its own fused AdamW), tinylm in a plain loop, tinylm's real path
     (CausalLMModule + `tinylm.training.fit` with `trainer=gpu`); a profile of the top kernels; tinylm with its
     own Triton attention (`attention=triton`) against the SDPA row; transformers' GPT2LMHeadModel; ms/step,
     tokens/s, MFU = tokens/s x (6 N + 12 L T d) / peak, peak memory
  5. pretrain: a short real pretraining (the pretrain stage, `experiment=gpu`, on the plays' tokens made on
     CPU): val loss and bits per byte over steps
  6. tests: `pytest -m gpu` (attention kernels, the Triton kernel at large shapes)
  7. attention: attention=triton against SDPA's flash backend at T = 1k..16k, D 64 and 128, causal and not
     (benchmarks/attention_triton.py); the tiled teaching kernel against SDPA (benchmarks/attention.py)

    python benchmarks/gpu.py --prepare .gpu       # on CPU, once: params, tokens, tokenizer, nanoGPT -> .gpu/
    PYTHONPATH=src python3 benchmarks/gpu.py --carry .gpu [--out $OUT/gpu.md]   # on the GPU box

Every section is timed and guarded: one that fails prints its error and the run goes on. The lent GPU allows
600 s per command and the run's length has never been measured: `--budget` (560 s, counted from the process's
start) skips the sections and throughput rows that would start later and names them, to rerun with
`--sections`; a figure printed before a stop is kept (the report is appended line by line). `--dry-run` runs
it at tiny shapes on the CPU; tests/test_gpu_path.py does, in an environment shaped like the GPU box's, so the
GPU run meets no untested code path but CUDA's own.
"""

import argparse
import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
NANOGPT = ROOT.parent / "shared" / "anchors" / "nanogpt" / "model.py"
GPT2 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512)
GPU_TESTS = ("tests/test_attention.py", "tests/test_mha.py", "tests/test_triton_attention.py")
ROW_RESERVE_S = {True: 120, False: 30, None: 60}  # a throughput row starts only with this much --budget left:
# compiled (GPT-2 compiles, 40-90 s on an H100, and the Lightning row's validation compiles again), eager, profile


class Report:
    """Markdown lines, printed as they come and appended to `path` (a partial run still leaves its figures)."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def section(say, title: str, fn, *args) -> None:
    say(f"\n### {title}\n")
    start = time.perf_counter()
    try:
        fn(say, *args)
    except Exception:  # one section's failure must not cost the others' figures
        say("```\n" + traceback.format_exc()[-3000:] + "```")
    say(f"\n({time.perf_counter() - start:.0f} s)")


def run_script(a, cmd: list[str], cap: float, **kw) -> subprocess.CompletedProcess:
    """Run cmd for at most `cap` seconds or what is left of --budget; on timeout, what it printed so far (a
    timed-out section still reports its finished rows) and a last line saying so, and the rerun hint names it.
    This process's cached GPU memory is handed back first: the subprocess gets the whole card."""
    peak_reset(a.device)
    limit = max(1.0, min(cap, a.deadline - time.perf_counter()))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=limit, **kw)
    except subprocess.TimeoutExpired as e:
        a.partial.add(a.current)
        text = [x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
        return subprocess.CompletedProcess(cmd, -9, text[0], text[1] + f"\nstopped after {limit:.0f} s")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    gc.collect()  # the previous row's model and optimizer sit in reference cycles: freed here, not in its peak
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device == "cuda" else "n/a"


def process_age() -> float:
    """Seconds since this process started (Linux's /proc; 0 elsewhere): the budget counts the imports too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# ------------------------------------------------------------------------------------------------ sections
def environment(say, a) -> None:
    import pytorch_lightning as pl
    import transformers

    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = "absent"
    dev = "CPU"
    if a.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    say(f"device: {dev}; torch {torch.__version__}, pytorch-lightning {pl.__version__}, transformers "
        f"{transformers.__version__}, triton {tv}")


def gpt_module(shape: dict, optim_steps: int, **kw):
    from tinylm.models import presets
    from tinylm.training.causal_lm import CausalLMModule

    cfg = presets("gpt2", **shape, dropout=0.0).to_dict()
    optim = dict(lr=6e-4, min_lr=6e-5, warmup_steps=1, max_steps=optim_steps, weight_decay=0.1, grad_clip=1.0)
    return CausalLMModule(cfg, {**optim, **kw})


def compiled_vs_eager(say, a) -> None:
    shape = TINY if a.dry_run else dict(n_layer=2, n_head=4, n_embd=256, block_size=256, vocab_size=50304)
    B, T, V = (4, 64, shape["vocab_size"]) if a.dry_run else (8, 256, 50304)
    x = torch.randint(0, V, (B, T + 1), device=a.device, generator=torch.Generator(a.device).manual_seed(0))
    batch = {"input_ids": x[:, :-1], "labels": x[:, 1:]}
    torch.manual_seed(0)
    eager = gpt_module(shape, 6).to(a.device)
    compiled = gpt_module(shape, 6).to(a.device)
    compiled.load_state_dict(eager.state_dict())
    compiled.model.compile()
    say("| run | loss step 0 | loss step 5 | max abs grad diff (step 0) | grads all zero |\n|---|---:|---:|---:|---|")
    grads, rows = {}, {}
    for name, m in (("eager", eager), ("compiled", compiled)):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        losses = []
        for step in range(6):
            with torch.autocast(a.device, dtype=torch.bfloat16):
                loss = m.training_step(batch, step)
            loss.backward()
            if step == 0:
                grads[name] = [p.grad.float().clone() for p in m.parameters()]
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        rows[name] = losses
    diff = max((g - e).abs().max().item() for g, e in zip(grads["compiled"], grads["eager"], strict=True))
    for name, losses in rows.items():
        zero = all(g.abs().sum().item() == 0 for g in grads[name])
        say(f"| {name} | {losses[0]:.4f} | {losses[-1]:.4f} | {diff if name == 'compiled' else 0:.2e} | {zero} |")
    torch.compiler.reset()  # else the GPT-2 rows would recompile these graphs with dynamic shapes, unlike nanoGPT's


def step_fn(kind: str, model, opt, clip: float | None):
    """One training step of `model` on (x, y) under bf16 autocast: forward, loss, backward, clip, step."""
    device = next(model.parameters()).device.type

    def step(x, y):
        with torch.autocast(device, dtype=torch.bfloat16):
            if kind == "nanogpt":
                loss = model(x, y)[1]
            elif kind == "hf":
                logits = model(input_ids=x, use_cache=False).logits  # training: no inference cache
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            else:
                loss = model(x, targets=y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def time_steps(step, device: str, B: int, T: int, V: int, steps: int, warmup: int) -> float:
    """Mean ms per step over `steps` steps after `warmup` (compilation happens there)."""
    g = torch.Generator(device).manual_seed(0)
    data = torch.randint(0, V, (steps + warmup, B, T + 1), device=device, generator=g)
    xs, ys = data[..., :-1].contiguous(), data[..., 1:].contiguous()  # (n, B, T)
    for i in range(warmup):
        step(xs[i], ys[i])
    sync(device)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(xs[i], ys[i])
    sync(device)
    return (time.perf_counter() - t) / steps * 1000


def chunk_sweep(say, a) -> None:
    from tinylm.models import build_model, presets
    from tinylm.nn import linear_cross_entropy as lce
    from tinylm.training.optim import build_optimizer

    shape = TINY if a.dry_run else GPT2
    B, T = (4, 64) if a.dry_run else (16, 1024)
    say(f"GPT-2 shapes {shape}, B {B}, T {T}, eager, bf16 autocast; default rows per chunk: {lce.CHUNK_ROWS}\n")
    say("| rows per chunk | ms/step | peak GiB |\n|---:|---:|---:|")
    default = lce.CHUNK_ROWS.get(a.device)
    try:
        for rows in (256, 1024, 4096, 8192, B * T):
            lce.CHUNK_ROWS[a.device] = rows
            torch.manual_seed(0)
            model = build_model(presets("gpt2", **shape, dropout=0.0)).to(a.device)
            peak_reset(a.device)
            ms = time_steps(step_fn("tinylm", model, build_optimizer(model, 6e-4, 0.1), 1.0), a.device, B, T,
                            shape["vocab_size"], 2 if a.dry_run else 10, 1 if a.dry_run else 3)
            say(f"| {rows} | {ms:.1f} | {peak_gib(a.device)} |")
            del model
    finally:
        lce.CHUNK_ROWS[a.device] = default


def load_nanogpt(path: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def throughput(say, a) -> None:
    from tinylm.interop.hf import to_hf
    from tinylm.models import build_model, presets
    from tinylm.training.base import peak_flops
    from tinylm.training.optim import build_optimizer

    shape = TINY if a.dry_run else GPT2
    B, T, V = (4, 64, shape["vocab_size"]) if a.dry_run else (16, 1024, 50304)
    steps, warmup = (3, 1) if a.dry_run else (20, 4)
    peak = peak_flops(torch.device(a.device))
    flops = gpt_module(shape, 10).flops_per_token()
    nanogpt = load_nanogpt(a.nanogpt) if a.nanogpt and a.nanogpt.exists() else None
    say(f"shapes {shape}, B {B}, T {T}, bf16 autocast, grad clip 1.0, {steps} timed steps after {warmup}; "
        f"MFU = tokens/s x {flops / 1e6:.0f} MFLOP/token / {peak or 0:.3g}\n")
    head = ("| model | compile | ms/step | tokens/s | MFU | peak GiB | vs nanoGPT same mode |\n"
            "|---|---|---:|---:|---:|---:|---:|")
    say(head)

    def tinylm_plain(attention="sdpa"):
        model = build_model(presets("gpt2", **shape, dropout=0.0, attention=attention)).to(a.device)
        return model, build_optimizer(model, 6e-4, 0.1), "tinylm"

    def nano():
        cfg = nanogpt.GPTConfig(**{k: shape[k] for k in ("block_size", "vocab_size", "n_layer", "n_head",
                                                         "n_embd")}, dropout=0.0, bias=True)
        model = nanogpt.GPT(cfg).to(a.device)
        return model, model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), a.device), "nanogpt"

    def hf():
        model = to_hf(build_model(presets("gpt2", **shape, dropout=0.0))).train().to(a.device)
        return model, build_optimizer(model, 6e-4, 0.1, fused=a.device == "cuda"), "hf"

    def plain(make):
        def ms(compiled):
            model, opt, kind = make()
            if compiled:
                model.compile()
            return time_steps(step_fn(kind, model, opt, 1.0), a.device, B, T, V, steps, warmup)
        return ms

    real = "tinylm CausalLMModule + fit (trainer=gpu)"
    timers = {"nanoGPT model.py": plain(nano), "tinylm GPT, plain loop": plain(tinylm_plain),
              real: lambda compiled: lightning_path(a, shape, B, T, V, compiled),
              "transformers GPT2LMHeadModel": plain(hf),
              "tinylm GPT, plain loop, attention=triton": plain(lambda: tinylm_plain("triton"))}
    if not nanogpt:
        say(f"nanoGPT's model.py not found at {a.nanogpt} (run --prepare, or pass --nanogpt): no peer rows\n")
        del timers["nanoGPT model.py"]
    # the order of need, for a run the budget cuts short: the comparisons (compiled, then eager), the
    # profile, the Triton kernel, transformers last (a device fault in the Triton kernel, which has never run
    # compiled on a GPU, would poison every later CUDA call: only transformers' rows come after it)
    modes = sorted(a.compile, reverse=True)
    plan = [(label, c) for c in modes for label in ("nanoGPT model.py", "tinylm GPT, plain loop", real)]
    plan += [("profile", None)]
    plan += [(label, c) for label in ("tinylm GPT, plain loop, attention=triton", "transformers GPT2LMHeadModel")
             for c in modes]
    reference = {}
    for label, compiled in plan:
        if label not in timers and label != "profile":  # nanoGPT's model.py not found
            continue
        if a.deadline - time.perf_counter() < ROW_RESERVE_S[compiled]:
            say(f"| {label} | {compiled} | skipped: under {ROW_RESERVE_S[compiled]} s of --budget left |")
            a.partial.add("throughput")
            continue
        try:  # a failed row is reported, the others still run (the row's model is freed with its frame)
            torch.manual_seed(0)
            peak_reset(a.device)  # inside: after a device fault it raises too, and is reported as the row's
            if label == "profile":
                profile(say, a, shape, B, T, V, nanogpt)
                say("\n" + head)  # the rows after the profile's blocks
                continue
            ms = timers[label](compiled)
        except Exception as e:
            say(f"| {label} | {compiled} | {type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]} |")
            continue
        if label == "nanoGPT model.py":
            reference[compiled] = ms
        row(say, label, compiled, ms, B * T, flops, peak, a.device, reference.get(compiled))


def row(say, label, compiled, ms, tokens, flops, peak, device, ref_ms) -> None:
    tps = tokens / ms * 1000
    mfu = f"{tps * flops / peak:.1%}" if peak else "n/a"
    vs = f"{ref_ms / ms:.2f}x" if ref_ms else "n/a"
    say(f"| {label} | {compiled} | {ms:.1f} | {tps:,.0f} | {mfu} | {peak_gib(device)} | {vs} |")


def lightning_path(a, shape, B, T, V, compiled: bool) -> float:
    """ms/step of the pretrain stage's path: CausalLMModule + fit with the trainer=gpu config (from the
    carried params.yaml, else the same values), median of the logged tokens/s after the first interval."""
    import numpy as np

    from tinylm.data.windows import FixedWindows, RandomWindows
    from tinylm.training.datamodules import StepDataModule
    from tinylm.training.fit import fit
    from tinylm.training.optim import OptimConfig

    steps, log_every = (4, 2) if a.dry_run else (60, 10)
    tcfg = replace(gpu_trainer(a), max_steps=steps, warmup_steps=1, val_every=10**6, val_batches=1,
                   log_every=log_every, ckpt_every=10**6, batch_size=B, compile=compiled, num_workers=0)
    tokens = np.random.default_rng(0).integers(0, V, 4_000_000 if not a.dry_run else 50_000, dtype=np.int64)
    module = gpt_module(shape, steps, **{k: v for k, v in vars(OptimConfig.of(tcfg)).items()
                                         if k not in ("max_steps", "warmup_steps")})
    dm = StepDataModule(RandomWindows(tokens, T, B, 0), FixedWindows(tokens, T, B, 1), batch_size=None, seed=0,
                        max_steps=steps)
    peak_reset(a.device)
    with tempfile.TemporaryDirectory() as d:
        _, history = fit(module, dm, tcfg, Path(d), fingerprint="bench", say=lambda *_: None)
    tps = sorted(r["train/tokens_per_s"] for r in history.speed[1:] if "train/tokens_per_s" in r)
    return B * T / tps[len(tps) // 2] * 1000


def gpu_trainer(a):
    """The trainer=gpu config: from the carried params.yaml (composed with experiment=gpu on CPU), else from
    conf/trainer/gpu.yaml read as plain YAML (the GPU box has no Hydra); accelerator cpu for --dry-run."""
    import yaml

    from tinylm.pipeline.config import TrainerConfig, _build

    params = a.carry / "params.yaml" if a.carry else None
    raw = yaml.safe_load(params.read_text())["trainer"] if params and params.exists() else \
        yaml.safe_load((ROOT / "conf/trainer/gpu.yaml").read_text())
    tcfg = _build(TrainerConfig, raw, "trainer")
    return replace(tcfg, accelerator="cpu", devices=1) if a.dry_run else tcfg


def profile(say, a, shape, B, T, V, nanogpt) -> None:
    """Top CUDA kernels of one compiled step, tinylm against nanoGPT: where tinylm's time goes (--dry-run: top
    CPU ops of an eager step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from tinylm.models import build_model, presets
    from tinylm.training.optim import build_optimizer

    models = [("tinylm", lambda: build_model(presets("gpt2", **shape, dropout=0.0)))]
    if nanogpt:
        models.append(("nanogpt", lambda: nanogpt.GPT(nanogpt.GPTConfig(
            **{k: shape[k] for k in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")}, dropout=0.0))))
    for kind, make in models:
        model = make().to(a.device)
        if not a.dry_run:
            model.compile()
        step = step_fn(kind, model, build_optimizer(model, 6e-4, 0.1), 1.0)
        time_steps(step, a.device, B, T, V, 1, 3)
        x = torch.randint(0, V, (B, T + 1), device=a.device)
        x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()  # nanoGPT views its targets
        on = "cuda" if a.device == "cuda" else "cpu"
        with torch_profile(activities=[ProfilerActivity.CUDA if on == "cuda" else ProfilerActivity.CPU]) as prof:
            step(x, y)
            sync(a.device)
        say(f"\n{kind}, {'eager' if a.dry_run else 'compiled'}, one step, top {on.upper()} kernels:\n```\n"
            + prof.key_averages().table(sort_by=f"{on}_time_total", row_limit=12, max_name_column_width=60)
            + "\n```")
        del model


def pretraining(say, a) -> None:
    """The pretrain stage itself on the carried plays' tokens (experiment=gpu), tracking off."""
    if not a.carry or not (a.carry / "data/tokens/train.bin").exists():
        say("no carried tokens (run --prepare on CPU first): skipped")
        return
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for part in ("data", "artifacts"):
            (work / part).symlink_to((a.carry / part).resolve())
        import yaml

        params = yaml.safe_load((a.carry / "params.yaml").read_text())
        params["tracking"] = False
        params["trainer"].update(max_steps=a.pretrain_steps, val_every=max(1, a.pretrain_steps // 4),
                                 ckpt_every=a.pretrain_steps, warmup_steps=min(100, a.pretrain_steps // 10))
        if a.dry_run:  # small batches: on a CPU without native bf16 (AVX2), 4 x 20 of 4 windows took over 300 s
            params["trainer"].update(accelerator="cpu", precision="bf16-mixed", compile=False, batch_size=1,
                                     num_workers=0, val_batches=2)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        out = run_script(a, [sys.executable, str(ROOT / "pipelines/pretrain.py"), "decoder"], a.pretrain_timeout,
                         cwd=work, env=env)
        wall = time.perf_counter() - start
        if out.returncode:
            say("```\n" + out.stderr[-3000:] + "\n```")
            return
        metrics = json.loads((work / "reports/speed/decoder.json").read_text())
        say(f"pretrain stage, {params['decoder']['n_layer']} x {params['decoder']['n_embd']}, block "
            f"{params['decoder']['block_size']}, batch {params['trainer']['batch_size']}, {a.pretrain_steps} steps:"
            f" {wall:.0f} s wall (process, compile included), train {metrics['train_seconds']:.0f} s, "
            f"{metrics['tokens_per_s']:,.0f} tokens/s\n")
        say("| step | val/loss | val/bpb |\n|---:|---:|---:|")
        with open(work / "reports/decoder/val.csv") as f:
            header = f.readline().strip().split(",")
            for line in f:
                r = dict(zip(header, line.strip().split(","), strict=True))
                say(f"| {r['step']} | {float(r['val/loss']):.4f} | {float(r.get('val/bpb') or 'nan'):.4f} |")


def gpu_tests(say, a) -> None:
    """`pytest -m gpu` on the files that hold GPU tests: collecting all of tests/ there fails, since most test
    modules import what the GPU box lacks (datasets, sacrebleu, ...), and pytest runs nothing after a collection
    error. A CI test checks that every gpu-marked test lies in GPU_TESTS."""
    out = run_script(a, [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                         "-W", "ignore::pytest.PytestConfigWarning", *GPU_TESTS], 240,  # no pytest-timeout there
                     cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    tail = out.stdout.strip().splitlines()[-15:]
    if out.returncode == -9:  # stopped by the budget
        tail += out.stderr.strip().splitlines()[-1:]
    say("```\n" + "\n".join(tail) + "\n```")


def attention(say, a) -> None:
    """Issue 14's table (attention=triton against SDPA's flash backend, B4 H16, D 64 and 128, causal and not,
    T 1k..16k), then the CPU teaching kernels against SDPA on the GPU (causal, B1 H8 D64)."""
    for script, args, cap in (("attention_triton.py", [], 240),
                              ("attention.py", ["--device", "cuda", "--causal", "--impls", "naive", "flash128",
                                                "sdpa", "--seqs", "1024", "4096", "16384", "--budget", "5"], 90)):
        out = run_script(a, [sys.executable, str(ROOT / "benchmarks" / script), *args], cap, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        say(out.stdout[-8000:])  # rows are printed as they are measured: a stopped script keeps them
        if out.returncode:
            say("```\n" + out.stderr[-3000:] + "\n```")


# ------------------------------------------------------------------------------------------------ prepare
def prepare(dest: Path, nanogpt: Path) -> None:
    """On the CPU machine: everything the GPU run needs that the GPU box cannot make (it has no Hydra, DVC or
    datasets): params.yaml composed with experiment=gpu, the plays' token files and tokenizer made by the
    real stages in a temporary copy of this repository, nanoGPT's model.py (the peer; its absence is said)."""
    from tinylm.pipeline.config import compose, to_yaml

    dest.mkdir(parents=True, exist_ok=True)
    params = compose(["experiment=gpu"], ROOT / "conf")
    (dest / "params.yaml").write_text(to_yaml(params))
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "repo"
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for f in filter(None, files.split("\n")):
            if (ROOT / f).is_file():
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, repo / f)
        shutil.copy2(dest / "params.yaml", repo / "params.yaml")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d}/m.db",  # dvc.yaml's stages run `python`:
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # this one, venv or not
        for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "repro", "tokenize"]):
            subprocess.run(cmd, cwd=repo, check=True, env=env)
        for part in ("data/tokens", "artifacts/tokenizer"):
            shutil.rmtree(dest / part, ignore_errors=True)
            shutil.copytree(repo / part, dest / part, ignore=shutil.ignore_patterns("sft", "cls"))
    if nanogpt.exists():
        (dest / "nanogpt").mkdir(exist_ok=True)
        shutil.copy2(nanogpt, dest / "nanogpt" / "model.py")
    else:
        print(f"nanoGPT's model.py not found at {nanogpt}: the GPU run will have no peer rows (pass --nanogpt PATH)",
              file=sys.stderr)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"prepared {dest} ({size / 2**20:.1f} MiB): carry it to the GPU run")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", type=Path, help="on CPU: write the carried folder and exit")
    p.add_argument("--carry", type=Path, help="the folder --prepare wrote")
    p.add_argument("--nanogpt", type=Path,
                   help="nanoGPT's model.py (default: <carry>/nanogpt, ../shared/anchors/nanogpt)")
    p.add_argument("--out", type=Path, help="also append the markdown here")
    p.add_argument("--sections", nargs="+", default=["env", "compile", "chunks", "throughput", "pretrain", "tests",
                                                     "attention"])
    p.add_argument("--budget", type=float, default=560,
                   help="seconds for the whole run from the process's start (the lent GPU allows 600 per command): a"
                        " section or throughput row that would start later is skipped and named at the end;"
                        " subprocesses are stopped when it runs out")
    p.add_argument("--compile", nargs="+", type=lambda s: s == "on", default=[False, True], metavar="{off,on}",
                   help="throughput rows: eager (off), compiled (on) or both (default)")
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--pretrain-timeout", type=float, default=300)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: check the code paths")
    a = p.parse_args()
    a.deadline = time.perf_counter() + a.budget - process_age()  # `import torch` takes 10-20 s on a cold box
    a.partial = set()  # sections the budget cut short: rows skipped, a subprocess stopped
    a.current = None  # the section running
    if a.prepare:
        prepare(a.prepare, a.nanogpt or NANOGPT)
        return
    a.device = "cpu" if a.dry_run else "cuda"
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU (or --dry-run)")
    if a.nanogpt is None:
        carried = a.carry / "nanogpt" / "model.py" if a.carry else None
        a.nanogpt = carried if carried and carried.exists() else NANOGPT
    if a.dry_run:
        a.pretrain_steps = 4
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU box has no network: nothing may wait on the hub
    torch.backends.cuda.matmul.allow_tf32 = True
    say = Report(a.out)
    sections = {"env": ("Environment", environment), "compile": ("Compiled vs eager", compiled_vs_eager),
                "chunks": ("Fused loss: rows per chunk", chunk_sweep),
                "throughput": ("Training throughput, GPT-2 124M shapes", throughput),
                "pretrain": ("Pretraining the plays (experiment=gpu)", pretraining),
                "tests": ("pytest -m gpu", gpu_tests), "attention": ("Attention kernels", attention)}
    skipped = []
    for name in a.sections:
        if time.perf_counter() >= a.deadline:
            skipped.append(name)
            continue
        title, fn = sections[name]
        a.current = name
        section(say, title, fn, a)
    rerun = [n for n in a.sections if n in a.partial] + skipped
    if rerun:
        say(f"\n--budget {a.budget:.0f} s spent; not run{' (or in part)' if a.partial else ''}: rerun with --sections "
            f"{' '.join(rerun)}")


if __name__ == "__main__":
    main()
