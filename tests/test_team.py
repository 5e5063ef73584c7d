"""Team workflow: an MLflow tracking server backed by PostgreSQL. A throwaway PostgreSQL cluster on loopback,
`mlflow server --backend-store-uri postgresql://...`, real stages of the smoke pipeline (a short pretraining
of the decoder, then summarize) logging to it through MLFLOW_TRACKING_URI, and the runs found through the REST
API and in the database. Skipped only where PostgreSQL is not installed (`.ci/run` installs it as root)."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_repo, run_cmd

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 (a free port, no password) with an empty database `mlflow`; yields
    its SQLAlchemy URI. As root the cluster runs as the `postgres` user (PostgreSQL refuses root)."""
    bins = os.pathsep.join([*sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:], os.environ["PATH"]])  # Debian
    initdb, pg_ctl = shutil.which("initdb", path=bins), shutil.which("pg_ctl", path=bins)
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it as root)")
    owner = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        owner = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="tinylm-pg-"))  # not in pytest's tmp: its folders are closed to others
    if owner:
        shutil.chown(root, "postgres")
    port, data, env = free_port(), root / "data", dict(os.environ)
    run_cmd([*owner, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"], root, env)
    run_cmd([*owner, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
             f"-h 127.0.0.1 -p {port} -k {root} -F", "start"], root, env)
    try:
        run_cmd([*owner, str(Path(initdb).with_name("createdb")), "-h", "127.0.0.1", "-p", str(port), "-U",
                 "postgres", "mlflow"], root, env)
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        run_cmd([*owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], root, env, check=False)
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def server(postgres, smoke_repo, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with the PostgreSQL backend and proxied artifacts; yields its URL."""
    env = {**smoke_repo[1], "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    folder, port = tmp_path_factory.mktemp("mlflow-server"), free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(["mlflow", "server", "--backend-store-uri", postgres, "--artifacts-destination",
                                 str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers",
                                 "1"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # the first start creates MLflow's tables in PostgreSQL
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-4000:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_stages_log_to_a_postgresql_backed_tracking_server(smoke_repo, postgres, server, tmp_path):
    import psycopg

    repo = copy_repo(smoke_repo[0], tmp_path / "repo")
    env = {**smoke_repo[1], "PYTHONPATH": str(repo / "src"), "MLFLOW_TRACKING_URI": server}
    run_cmd([sys.executable, "pipelines/pretrain.py", "decoder", "experiment=smoke", "trainer.max_steps=4",
             "trainer.val_every=2", "trainer.log_every=1", "trainer.warmup_steps=1"], repo, env)
    run_cmd([sys.executable, "pipelines/summarize.py"], repo, env)

    def api(path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(f"{server}/api/2.0/mlflow/{path}", headers={"Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        return json.loads(urllib.request.urlopen(req, timeout=30).read())

    exps = {e["name"]: e["experiment_id"] for e in api("experiments/search", {"max_results": 100})["experiments"]}
    [pipeline] = api("runs/search", {"experiment_ids": [exps["pipeline"]]})["runs"]
    [train] = api("runs/search", {"experiment_ids": [exps["pretrain"]]})["runs"]
    tags = {t["key"]: t["value"] for t in train["data"]["tags"]}
    assert tags["mlflow.parentRunId"] == pipeline["info"]["run_id"] and tags["model"] == "decoder"
    assert train["info"]["status"] == pipeline["info"]["status"] == "FINISHED"
    assert {"train/loss", "val/loss", "final/steps"} <= {m["key"] for m in train["data"]["metrics"]}
    assert {"key": "trainer.max_steps", "value": "4"} in train["data"]["params"]
    assert "reports/decoder/metrics/val_loss" in {m["key"] for m in pipeline["data"]["metrics"]}
    files = api(f"artifacts/list?run_id={train['info']['run_id']}&path=report")["files"]
    assert "report/metrics.json" in {f["path"] for f in files}  # uploaded through the server
    [model] = api("logged-models/search", {"experiment_ids": [exps["pretrain"]]})["models"]  # weights uploaded too
    assert model["info"]["name"] == "decoder" and model["info"]["status"] == "LOGGED_MODEL_READY"
    with psycopg.connect(postgres) as db:  # the runs live in PostgreSQL
        stored = {r[0] for r in db.execute("SELECT run_uuid FROM runs")}
    assert {pipeline["info"]["run_id"], train["info"]["run_id"]} <= stored
