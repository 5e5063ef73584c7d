"""Integration: the whole smoke pipeline (`dvc repro`, all stages through evaluate and summarize) in a
temporary copy of the repository (the `full` fixture of conftest.py, shared with test_faults.py); then the
outputs, DVC's cleanliness, the MLflow runs, the Hugging Face exports, the CLI, `dvc exp run -S` composing
the same params, and a 2-process DDP run (gloo) in which only rank zero writes."""

import json
import sys

import pytest
import torch

pytestmark = pytest.mark.slow
MODELS = ("decoder", "encoder", "decoder-sft", "classifier", "seq2seq")
STAGES = {"pretrain": 2, "sft": 1, "classify": 1, "train_seq2seq": 1, "evaluate": 1}


def test_outputs(full):
    repo, _ = full
    for name in MODELS:
        assert {"model.safetensors", "config.json", "tokenizer.json", "last.ckpt"} <= {
            p.name for p in (repo / "models" / name).iterdir()}, name
        metrics = json.loads((repo / "reports" / name / "metrics.json").read_text())
        assert metrics["val_loss"] > 0 and metrics["steps"] > 0, name
        assert (repo / "reports" / name / "loss.png").stat().st_size > 1000
    speed = {p.name: json.loads(p.read_text()) for p in (repo / "reports/speed").glob("*.json")}
    assert set(speed) == {f"{m}.json" for m in MODELS} | {"tokenizer.json", "eval.json"}
    assert all(speed[f"{m}.json"]["train_seconds"] > 0 < speed[f"{m}.json"]["tokens_per_s"] for m in MODELS)
    assert speed["eval.json"]["seq2seq"]["continue"]["beam2"]["ms_per_item"] > 0
    assert "train_seconds" not in metrics and "tokens_per_s" not in metrics  # wall clock only in reports/speed/
    assert json.loads((repo / "reports/decoder/metrics.json").read_text())["steps"] == 40
    ev = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert set(ev["decoder-sft"]["tasks"]) == {"speaker", "play", "continue"}
    assert set(ev["decoder-sft"]["tasks"]["play"]) == {"greedy", "beam2", "beam4", "sample"}
    assert 0 <= ev["decoder-sft"]["tasks"]["play"]["beam4"]["exact_match"] <= 1
    assert ev["perplexity"]["decoder"] > 1 and 0 <= ev["encoder"]["mlm_acc"] <= 1
    assert 0 <= ev["genre"]["classifier_acc"] <= 1 and ev["genre"]["paired"]["classifier_vs_bow"]["p_value"] <= 1
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
    assert "GPT (gpt)" in info and "last.ckpt" in info and "metrics (" in info and "val_loss" in info
    chat = {m: json.loads((repo / "models" / m / "config.json").read_text())["chat"]
            for m in ("decoder", "decoder-sft")}
    assert chat == {"decoder": False, "decoder-sft": True}  # what `generate` wraps in the chat template
    full_context = run(["tinylm", "generate", "--model", "models/decoder", "--prompt", "x", "--max-new-tokens", "96"],
                       repo, env, check=False)
    assert full_context.returncode != 0 and "--max-new-tokens=96 leaves no room for a prompt" in full_context.stderr
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


def test_mlflow_models_registry_inputs_and_system_metrics(full):
    """What a team sees in MLflow: model-training experiments, every trained model a LoggedModel holding its
    weights with its metrics linked, the SFT decoder registered with aliases, data inputs with digests, system
    metrics, and the pipeline run's short headline metrics with the saved view that shows them."""
    repo, _ = full
    import mlflow
    from mlflow import MlflowClient

    from tinylm.data.sources import sha256_file

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exps = {e.name: e for e in client.search_experiments()}
    assert {e.tags.get("mlflow.experimentKind") for e in exps.values() if e.name != "Default"} == {
        "custom_model_development"}
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    ids = [exps[s].experiment_id for s in ("pretrain", "sft", "classify", "train_seq2seq")]
    models = {m.name: m for m in mlflow.search_logged_models(experiment_ids=ids, output_format="list")}
    assert set(models) == set(MODELS)
    for name, m in models.items():
        assert str(m.status) == "READY" and m.source_run_id, name
        assert m.tags["tinylm.weights_sha256"] == sha256_file(repo / "models" / name / "model.safetensors"), name
        held = {a.path for a in client.list_logged_model_artifacts(m.model_id)}
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= held, name
        linked = {x.key: x for x in m.metrics}
        report = json.loads((repo / "reports" / name / "metrics.json").read_text())
        assert linked["final/val_loss"].value == pytest.approx(report["val_loss"]), name
        assert linked["final/val_loss"].dataset_name, name  # validation metrics name their data
        run = client.get_run(m.source_run_id)
        if run.info.end_time - run.info.start_time > 1000 or name == "decoder":  # MLflow samples every 0.25 s
            assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), name
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        contexts = {t.value for d in inputs.values() for t in d.tags if t.key == "mlflow.data.context"}
        assert contexts == {"training", "validation"}, name
    sft_run = client.get_run(models["decoder-sft"].source_run_id)
    val = next(d for d in sft_run.inputs.dataset_inputs if d.dataset.name == "data/tokens/sft/val")
    assert val.dataset.digest == models["decoder-sft"].tags["tinylm.val_data"]
    assert {t.key: t.value for t in val.tags}["sha256"].startswith(val.dataset.digest)

    version = client.get_model_version_by_alias("tinylm-decoder-sft", "champion")
    assert client.get_model_version_by_alias("tinylm-decoder-sft", "candidate").version == version.version
    assert version.source == f"models:/{models['decoder-sft'].model_id}" and version.run_id == sft_run.info.run_id
    pipeline = client.get_run(sft_run.data.tags["mlflow.parentRunId"])  # test_pipeline_data left other keys' runs
    assert pipeline.data.tags["tinylm.sft_model_version"] == f"tinylm-decoder-sft/{version.version}"
    sft = json.loads((repo / "reports/decoder-sft/metrics.json").read_text())
    assert pipeline.data.metrics["decoder-sft/val_bpb"] == pytest.approx(sft["val_bpb"], abs=1e-4)
    assert {"decoder-sft.speaker/greedy", "decoder-sft.speaker/beam", "decoder/val_loss"} <= set(
        pipeline.data.metrics)
    view = json.loads(exps["pipeline"].tags["mlflow.sharedViewState.headline"])
    assert view["name"] == "Headline"
    assert "metrics.`decoder-sft/val_bpb`" in json.loads(view["state"])["selectedColumns"]


def test_mlflow_ui_in_a_browser(full, run, tmp_path):
    """`mlflow ui` on the store the pipeline wrote, runs found through the REST API, then a headless Chromium
    through what a person opens: the pipeline's runs table (as a model-training experiment, with the Headline
    view), two pipeline runs compared, the SFT training run, its LoggedModel and the registered model. Each page
    must show its run names, metric names or aliases; screenshots are saved in the test's folder and, when
    TINYLM_SCREENSHOTS names a folder, copied there."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    from browser import Chromium, find_chromium

    repo, env = full
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}"], cwd=repo,
                              env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    try:  # while the server starts: summarize again, as another pipeline run (of the same models)
        run([sys.executable, "pipelines/summarize.py"], repo, {**env, "DVC_EXP_NAME": "rerun"})
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        exps = {e["name"]: e for e in post("/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]}
        assert {"pipeline", "pretrain", "sft", "evaluate"} <= set(exps)
        kind = {t["key"]: t["value"] for t in exps["pipeline"]["tags"]}["mlflow.experimentKind"]
        assert kind == "custom_model_development"
        pid, sft_id = exps["pipeline"]["experiment_id"], exps["sft"]["experiment_id"]
        pipeline = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [pid]})["runs"]
        names = {r["info"]["run_name"]: r["info"]["run_id"] for r in pipeline}
        assert {"smoke", "rerun"} <= set(names)
        children = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [exps["pretrain"]["experiment_id"]],
                                                        "filter": "tags.model = 'decoder'"})["runs"]
        assert {t["key"]: t["value"] for t in children[0]["data"]["tags"]}["mlflow.parentRunId"] in names.values()
        sft_run = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [sft_id]})["runs"][0]["info"]["run_id"]
        model_id = post("/api/2.0/mlflow/logged-models/search", {"experiment_ids": [sft_id]})["models"][0]
        model_id = model_id["info"]["model_id"]

        chromium = find_chromium()
        if not chromium:
            pytest.skip("no chromium (Debian: apt-get install chromium; .ci/run does it as root)")
        shots = tmp_path / "screenshots"
        shots.mkdir()
        ml = "workflowType=machine_learning"
        pages = [  # (file, address, what the page must show[, the text to scroll to])
            ("1-pipeline-runs.png", f"/#/experiments/{pid}/runs?{ml}&viewStateShareKey=headline",
             ["Runs", "Headline", "smoke", "rerun", "decoder/val_loss", "decoder/val_bpb"]),
            ("2-compare-pipeline-runs.png", f"/#/compare-runs?runs={json.dumps([names['smoke'], names['rerun']])}"
             f"&experiments={json.dumps([pid])}&{ml}",
             ["Comparing 2 Runs", "smoke", "rerun", "decoder-sft/val_bpb", "decoder-sft.speaker/beam"],
             "decoder-sft.play/beam"),
            ("3-sft-run.png", f"/#/experiments/{sft_id}/runs/{sft_run}?{ml}",
             ["sft-decoder-sft", "data/tokens/sft/train", "decoder-sft"]),
            ("4-logged-model.png", f"/#/experiments/{sft_id}/models/{model_id}?{ml}",
             ["decoder-sft", "final/val_bpb", "data/tokens/sft/val", "tinylm-decoder-sft"]),
            ("5-registered-model.png", f"/#/models/tinylm-decoder-sft?{ml}", ["Version 1", "champion", "candidate"]),
        ]
        with Chromium(chromium, tmp_path / "chrome") as browser:
            browser.send("Page.addScriptToEvaluateOnNewDocument", source=(  # keep the assistant panel closed
                "try { localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                " localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false') } catch (e) {}"))
            text = browser.goto(f"{url}/#/experiments/{pid}?{ml}", ["Runs", "smoke", "rerun"])
            assert "/runs" in browser.evaluate("location.hash") and "Detect Issues" not in text  # not GenAI's
            for name, address, expect, *scroll in pages:
                browser.goto(url + address, expect)
                if scroll:
                    browser.scroll_to(scroll[0])
                assert browser.screenshot(shots / name).stat().st_size > 20_000, name
        if os.environ.get("TINYLM_SCREENSHOTS"):
            shutil.copytree(shots, os.environ["TINYLM_SCREENSHOTS"], dirs_exist_ok=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its worker
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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
