"""A real training stage (`pipelines/pretrain.py decoder`, the smoke experiment with a checkpoint every 20
steps and a validation every 40) killed twice by SIGKILL, each time at a random moment after one to three
checkpoints, then run to the end, leaves the same files as an uninterrupted run in another directory:
weights, metrics, histories, plots, the HF export and last.ckpt itself, byte for byte (issue 18)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import copy_repo

pytestmark = pytest.mark.slow

STAGE = [sys.executable, "pipelines/pretrain.py", "decoder", "experiment=smoke", "tracking=false",
         "trainer.max_steps=200", "trainer.ckpt_every=20", "trainer.val_every=40", "trainer.log_every=5"]
OUTPUTS = ["models/decoder", "reports/decoder"]


def files(repo):
    """{relative path: bytes} of every file the stage writes, wall-clock figures (reports/speed/) left out."""
    out = {}
    for top in OUTPUTS:
        for p in sorted((repo / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(repo))] = p.read_bytes()
    return out


def kill_after_checkpoints(repo, env, n_checkpoints: int, delay: float) -> None:
    """Start the stage, wait until it has written last.ckpt n_checkpoints times, sleep `delay`, SIGKILL it."""
    ckpt = repo / "models" / "decoder" / "last.ckpt"
    seen, last = 0, ckpt.stat().st_mtime_ns if ckpt.exists() else None
    proc = subprocess.Popen(STAGE, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while seen < n_checkpoints and proc.poll() is None and time.monotonic() < deadline:
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if stamp != last and stamp is not None:
            seen, last = seen + 1, stamp
        time.sleep(0.005)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the stage ended before the kill ({proc.returncode})"


def test_killed_and_resumed_stage_matches_an_uninterrupted_one(smoke_repo, tmp_path, run):
    repo, env = smoke_repo
    env = {**env, "OMP_NUM_THREADS": "1"}  # the smoke experiment's thread count (trainer.num_threads)
    straight, killed = copy_repo(repo, tmp_path / "straight"), copy_repo(repo, tmp_path / "killed")
    run(STAGE, straight, env)
    rng = random.Random()  # a different kill point each run: printed on failure
    plan = [(rng.randint(1, 3), rng.uniform(0.0, 0.5)) for _ in range(2)]
    for n, delay in plan:
        kill_after_checkpoints(killed, env, n, delay)
    out = run(STAGE, killed, env)
    assert "resuming from models/decoder/last.ckpt at step" in out.stdout, out.stdout[-2000:]
    assert "not resumable" not in out.stderr  # Lightning's warning: resume_path has said what resumes
    ours, theirs = files(killed), files(straight)
    assert ours.keys() == theirs.keys()
    differ = [k for k in ours if ours[k] != theirs[k]]
    assert not differ, f"kills {plan} (checkpoints seen, seconds after): {differ} differ"
    assert not (killed / "models" / "decoder" / "last.ckpt.tmp").exists()


def test_a_resume_that_finds_training_done_reports_no_speed_it_did_not_measure(smoke_repo, tmp_path, run):
    """Rerunning a finished stage resumes at its last step: it trains nothing, so its reports/speed/ file has
    no tokens/s (not a measured 0), and every other output is the first run's, byte for byte."""
    repo, env = smoke_repo
    repo = copy_repo(repo, tmp_path / "twice")
    stage = [*STAGE[:6], "trainer.max_steps=10", "trainer.ckpt_every=5", "trainer.val_every=5"]
    run(stage, repo, {**env, "OMP_NUM_THREADS": "1"})
    first, speed = files(repo), json.loads((repo / "reports/speed/decoder.json").read_text())
    assert speed["tokens_per_s"] > 0
    out = run(stage, repo, {**env, "OMP_NUM_THREADS": "1"})
    assert "resuming from models/decoder/last.ckpt at step 10" in out.stdout, out.stdout[-2000:]
    assert files(repo) == first
    again = json.loads((repo / "reports/speed/decoder.json").read_text())
    assert set(again) == {"train_seconds"} and again["train_seconds"] > 0
