"""A real stage killed with SIGKILL at a random moment after a checkpoint, then rerun, ends with the weights
and metrics of an uninterrupted run, bit for bit (the smoke experiment's `pretrain.py decoder`, several
checkpoints, validation and checkpoints on the same steps as in the default config)."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import copy_repo

STAGE = [sys.executable, "pipelines/pretrain.py", "decoder", "experiment=smoke", "tracking=false",
         "trainer.max_steps=120", "trainer.val_every=30", "trainer.ckpt_every=30", "trainer.log_every=5"]


def outcome(repo) -> tuple[str, dict]:
    weights = hashlib.sha256((repo / "models/decoder/model.safetensors").read_bytes()).hexdigest()
    metrics = json.loads((repo / "reports/decoder/metrics.json").read_text())
    return weights, metrics  # wall-clock figures are apart, in reports/speed/


def checkpoint_steps_seen(repo, proc, delay: float) -> None:
    """Wait for the first last.ckpt, then `delay` seconds more, then SIGKILL the stage's process group."""
    ckpt = repo / "models/decoder/last.ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the stage ended before its first checkpoint"
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_stage_killed_after_a_checkpoint_resumes_bit_exact(smoke_repo, tmp_path):
    repo, env = smoke_repo
    env = {**env, "OMP_NUM_THREADS": "2"}
    ref, killed = copy_repo(repo, tmp_path / "ref"), copy_repo(repo, tmp_path / "killed")
    subprocess.run(STAGE, cwd=ref, env=env, check=True, capture_output=True, timeout=600)
    delay = random.Random().uniform(0.0, 2.0)  # anywhere in the next checkpoint interval or two
    proc = subprocess.Popen(STAGE, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoint_steps_seen(killed, proc, delay)
    assert proc.returncode == -signal.SIGKILL
    if (killed / "reports/decoder/metrics.json").exists():
        pytest.skip(f"killed {delay:.2f} s after the first checkpoint, the stage had already finished")
    out = subprocess.run(STAGE, cwd=killed, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from models/decoder/last.ckpt at step" in out.stdout
    assert "dataloader is not resumable" not in out.stderr
    ours, theirs = outcome(killed), outcome(ref)
    assert ours[1] == theirs[1], f"killed {delay:.2f} s after the first checkpoint"
    assert ours[0] == theirs[0], f"killed {delay:.2f} s after the first checkpoint: weights differ"
    shutil.rmtree(tmp_path)
