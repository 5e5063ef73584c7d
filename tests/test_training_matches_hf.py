"""The pretrain@decoder stage (Lightning, tinylm's GPT, the fused output layer + loss) ends at the val loss of
transformers' GPT2LMHeadModel trained by a plain loop from the same weights on the same batches
(benchmarks/quality.py, on the smoke experiment's data)."""

import re
import sys

import pytest
from conftest import ROOT, copy_repo

pytestmark = pytest.mark.slow


def test_the_pretrain_stage_matches_gpt2_trained_in_a_plain_loop(smoke_repo, run, tmp_path):
    repo, env = smoke_repo
    work = copy_repo(repo, tmp_path / "quality")
    out = run([sys.executable, str(ROOT / "benchmarks/quality.py"), "--steps", "30", "experiment=smoke"], work, env)
    m = re.search(r"tinylm_val_loss=(\S+) hf_gpt2_val_loss=(\S+) diff=(\S+)", out.stdout)
    assert m, out.stdout[-2000:]
    ours, theirs = float(m[1]), float(m[2])
    assert ours < 6.5 and abs(ours - theirs) <= 2e-4, m[0]  # it learned (ln 1024 = 6.93), and the same
