"""Test-wide settings: offline hubs, one thread (the CI box has 2 busy cores), deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)
if not torch.cuda.is_available():  # Triton kernels run in Triton's interpreter on CPU tensors. Set before anything
    os.environ.setdefault("TRITON_INTERPRET", "1")  # imports triton: torch.compile does, and once imported without
    # it, the interpreter fails later ("Cannot call @triton.jit'd outside of the scope of a kernel")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_cmd(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; with check, fail the test showing the end of its output."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def run():
    return run_cmd


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    """A git repository holding a copy of this working tree, params.yaml composed for `smoke`, after
    `dvc repro tokenize` (the data stages); integration tests share it. Returns (path, env)."""
    from tinylm.pipeline.config import compose, to_yaml

    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (ROOT / f).is_file() and not f.startswith((".venv/", "reports/")) and f != "dvc.lock":
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    (repo / "params.yaml").write_text(to_yaml(compose(["experiment=smoke"], ROOT / "conf")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo / "src"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.25")  # short smoke runs
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run_cmd(["git", "init", "-q"], repo, env)
    run_cmd(["git", "add", "-A"], repo, env)
    run_cmd([*git, "commit", "-qm", "copy"], repo, env)
    run_cmd(["dvc", "repro", "tokenize"], repo, env)
    return repo, env


@pytest.fixture(scope="session")
def gpu_box(tmp_path_factory):
    """The python of an environment shaped like the lent GPU machine (tests/gpu_box.py)."""
    from gpu_box import make_box

    return make_box(tmp_path_factory.mktemp("gpu_box") / "venv")


@pytest.fixture(scope="session")
def full(smoke_repo):
    """`smoke_repo` after the whole smoke pipeline (`dvc repro`): every model, report and MLflow run; its dvc.lock
    as that first run left it is kept beside the repository (first.dvc.lock: later tests rerun stages)."""
    repo, env = smoke_repo
    run_cmd(["dvc", "repro"], repo, env)
    shutil.copy(repo / "dvc.lock", repo.parent / "first.dvc.lock")
    return repo, env


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of the pipeline repository `src` at `dest` (outputs, MLflow store and git history, without DVC's
    cache), where a test may run stages without disturbing the tests that share `src`."""
    shutil.copytree(src, dest, symlinks=True, ignore=lambda d, names: ["cache"] if Path(d).name == ".dvc" else [])
    return dest
