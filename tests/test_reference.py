"""A run against a reference dvc.lock (tinylm.pipeline.reference): the comparison on small locks and the command
against a committed lock in a git repository."""

import subprocess

import yaml

from tinylm.pipeline.reference import compare, main, reproduced


def lock(model_md5="a.dir", speed_md5="s1", code_md5="c1", lr=1e-3) -> dict:
    return {"schema": "2.0", "stages": {
        "download": {"cmd": "python pipelines/download.py", "deps": [{"path": "pipelines/download.py", "md5": "d"}],
                     "outs": [{"path": "data/raw", "md5": "r.dir"}]},
        "pretrain@decoder": {"cmd": "python pipelines/pretrain.py decoder",
                             "deps": [{"path": "src/tinylm/models/gpt.py", "md5": code_md5}],
                             "params": {"params.yaml": {"trainer.lr": lr}},
                             "outs": [{"path": "models/decoder", "md5": model_md5},
                                      {"path": "reports/decoder/metrics.json", "md5": "m"},
                                      {"path": "reports/speed/decoder.json", "md5": speed_md5}]}}}


def test_compare_leaves_out_wall_clock_and_tells_changed_inputs_from_other_bytes():
    same = compare(lock(), lock(speed_md5="s2"))  # only the wall-clock file differs
    assert reproduced(same) and same["pretrain@decoder"] == {"status": "reproduced", "differs": []}
    other = compare(lock(), lock(model_md5="b.dir"))
    assert not reproduced(other) and other["pretrain@decoder"] == {"status": "differs", "differs": ["models/decoder"]}
    assert other["download"]["status"] == "reproduced"
    for changed in (lock(model_md5="b.dir", code_md5="c2"), lock(model_md5="b.dir", lr=2e-3)):
        assert compare(lock(), changed)["pretrain@decoder"]["status"] == "inputs changed"
    partial = {"stages": {"download": lock()["stages"]["download"]}}
    assert compare(lock(), partial)["pretrain@decoder"]["status"] == "missing"
    assert compare(partial, lock())["pretrain@decoder"]["status"] == "new"


def test_the_command_reads_the_committed_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2 and "no reference" in capsys.readouterr().err  # not a git repository
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock()))
    subprocess.run([*git, "add", "dvc.lock"], check=True)
    subprocess.run([*git, "commit", "-qm", "reference"], check=True)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock(speed_md5="s2")))
    assert main([]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("reproduced: HEAD's dvc.lock")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock(model_md5="b.dir")))
    assert main([]) == 1
    out = capsys.readouterr().out
    assert "pretrain@decoder  differs: models/decoder" in out and "not reproduced" in out
