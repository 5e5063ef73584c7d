"""Integration: the whole smoke pipeline (`dvc repro`, all stages through evaluate and summarize) in a
temporary copy of the repository (the `full` fixture of conftest.py, shared with test_faults.py); then the
outputs, DVC's cleanliness, the MLflow runs, the Hugging Face exports, the CLI, `dvc exp run -S` composing
the same params, and a 2-process DDP run (gloo) in which only rank zero writes."""

import json
import sys

import pytest
import torch

pytestmark = pytest.mark.slow
MODELS = ("decoder", "encoder", "decoder-sft", "encoder-cls", "seq2seq")
STAGES = {"pretrain": 2, "sft": 1, "classify": 1, "train_seq2seq": 1, "evaluate": 1}


def test_outputs(full):
    repo, _ = full
    for name in MODELS:
        assert {"model.safetensors", "config.json", "tokenizer.json", "last.ckpt"} <= {
            p.name for p in (repo / "models" / name).iterdir()}, name
        metrics = json.loads((repo / "reports" / name / "metrics.json").read_text())
        assert metrics["val_loss"] > 0 and metrics["steps"] > 0, name
        assert (repo / "reports" / name / "loss.png").stat().st_size > 1000
    assert metrics["train_seconds"] > 0
    assert json.loads((repo / "reports/decoder/metrics.json").read_text())["steps"] == 40
    ev = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert set(ev["decoder-sft"]["tasks"]) == {"speaker", "play", "continue"}
    assert set(ev["decoder-sft"]["tasks"]["play"]) == {"greedy", "beam2", "beam4", "sample"}
    assert 0 <= ev["decoder-sft"]["tasks"]["play"]["beam4"]["exact_match"] <= 1
    assert ev["perplexity"]["decoder"] > 1 and 0 <= ev["encoder"]["genre_acc"] <= 1
    report = (repo / "reports/eval/report.md").read_text()
    assert "| decoder-sft | speaker | beam4 |" in report and "## Examples" in report
    lines = (repo / "reports/eval/generations.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * 8  # models x tasks x eval.max_items
    assert set(json.loads(lines[0])["outputs"]) == {"greedy", "beam2", "beam4", "sample"}


def test_dvc_clean_and_exp_run_composes_the_same_params(full, run):
    repo, env = full
    assert json.loads(run(["dvc", "status", "--json"], repo, env).stdout) == {}
    out = run(["dvc", "exp", "run", "-S", "experiment=smoke"], repo, env)
    assert "Running stage 'pretrain@decoder'" not in out.stdout  # same composed params: nothing retrained


def test_mlflow_runs_nest_under_the_pipeline_run(full):
    repo, _ = full
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    parents = set()
    for stage, n in STAGES.items():
        runs = client.search_runs([client.get_experiment_by_name(stage).experiment_id])
        assert len(runs) == n and all(r.info.status == "FINISHED" for r in runs), stage
        parents |= {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    sft = client.search_runs([client.get_experiment_by_name("sft").experiment_id])[0]
    assert "train/loss" in sft.data.metrics and sft.data.metrics["final/steps"] == 20
    assert sft.data.tags["model"] == "decoder-sft" and sft.data.params["trainer.max_steps"] == "20"
    pipeline = client.get_run(parents.pop())
    assert "reports/eval/metrics/decoder-sft.tasks.play.greedy.exact_match" in pipeline.data.metrics


def test_hf_exports_load_by_path_and_agree(full):
    repo, _ = full
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from tinylm.models.io import load_pretrained

    for name, auto in (("decoder", AutoModelForCausalLM), ("decoder-sft", AutoModelForCausalLM),
                       ("encoder", AutoModelForMaskedLM)):
        ours, hf = load_pretrained(repo / "models" / name), auto.from_pretrained(repo / "models" / name / "hf")
        ids = AutoTokenizer.from_pretrained(repo / "models" / name / "hf")("ROMEO:\nWhat light")["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            assert torch.allclose(ours(x), hf(input_ids=x).logits, atol=1e-4), name


def test_cli(full, run, tmp_path):
    repo, env = full
    run(["tinylm", "export", "--model", "models/decoder-sft", "--out", str(tmp_path / "hf")], repo, env)
    files = sorted(p.name for p in (tmp_path / "hf").iterdir())  # the stage's export, file for file
    assert files == sorted(p.name for p in (repo / "models/decoder-sft/hf").iterdir())
    assert "tokenizer_config.json" in files
    out = run(["tinylm", "generate", "--model", "models/decoder-sft", "--prompt", "Which play is this from?",
               "--decoder", "beam", "--num-beams", "2", "--max-new-tokens", "8"], repo, env)
    assert out.returncode == 0
    info = run(["tinylm", "info", "models/decoder"], repo, env).stdout
    assert "GPT (gpt)" in info and "last.ckpt" in info
    bad = run(["tinylm", "generate", "--model", "models/decoder", "--prompt", "x", "--top-p", "1.5"], repo, env,
              check=False)
    assert bad.returncode != 0 and "--top-p must be in (0, 1]" in bad.stderr


def test_dvc_remote_push_then_pull_in_a_fresh_clone_recomputes_nothing(full, run, tmp_path):
    repo, env = full
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], repo, env)
    run(["git", "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "pipeline results"], repo, env)
    run(["dvc", "push"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    run(["dvc", "pull"], clone, env)
    assert (clone / "models/decoder-sft/model.safetensors").exists()
    out = run(["dvc", "repro"], clone, env)
    assert "Running stage" not in out.stdout, out.stdout


def test_mlflow_ui_serves_the_runs(full, tmp_path):
    """`mlflow ui` on 127.0.0.1 with the store the pipeline wrote; runs found through the REST API."""
    import json as _json
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    repo, env = full
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
                               f"sqlite:///{repo / 'mlflow.db'}"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(url + path, data=_json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return _json.loads(urllib.request.urlopen(req, timeout=10).read())

    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        exps = {e["name"]: e["experiment_id"] for e in post("/api/2.0/mlflow/experiments/search",
                                                             {"max_results": 100})["experiments"]}
        assert {"pipeline", "pretrain", "sft", "evaluate"} <= set(exps)
        pipeline = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [exps["pipeline"]]})["runs"]
        children = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [exps["pretrain"]],
                                                        "filter": "tags.model = 'decoder'"})["runs"]
        assert children and {t["key"]: t["value"] for t in children[0]["data"]["tags"]}["mlflow.parentRunId"] in {
            r["info"]["run_id"] for r in pipeline}
        assert any(m["key"] == "val/loss" for m in children[0]["data"]["metrics"])
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:  # a person's view of the runs table: pretrain's decoder and encoder runs, side by side
            shot = repo / "reports" / "mlflow-ui.png"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900",
                            "--virtual-time-budget=15000", f"--screenshot={shot}",
                            f"{url}/#/experiments/{exps['pretrain']}/runs"], check=True, timeout=120,
                           capture_output=True)
            assert shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ddp_two_cpu_processes_write_once(full, run):
    """Lightning's own DDP (gloo, 2 processes): both ranks train, only rank zero logs and writes.
    Last in this file: it retrains models/decoder."""
    repo, env = full
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pretrain").experiment_id
    before = len(client.search_runs([exp]))
    out = run([sys.executable, "pipelines/pretrain.py", "decoder", "experiment=smoke", "trainer=ddp",
               "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_steps=4",
               "trainer.warmup_steps=1",
               "trainer.val_every=2", "trainer.ckpt_every=2", "trainer.num_workers=0", "trainer.compile=false",
               "trainer.num_threads=1"], repo, env)
    assert "GLOBAL_RANK: 1" in out.stderr + out.stdout and out.stdout.count("pretrain decoder:") == 1
    runs = client.search_runs([exp], order_by=["attributes.start_time DESC"])
    assert len(runs) == before + 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["trainer.strategy"] == "ddp" and runs[0].data.metrics["final/steps"] == 4
    assert json.loads((repo / "reports/decoder/metrics.json").read_text())["steps"] == 4
