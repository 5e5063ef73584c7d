"""The house's floors, enforced on every import in src/tinylm (module level or inside functions):

    nn/, tokenizer/          torch (triton for the Triton kernel), numpy, regex; of tinylm only the floor-1
                             helpers tinylm.atomic (whole files) and tinylm.ctrl_c (Ctrl-C never lost)
    atomic.py, ctrl_c.py     nothing of tinylm
    models/, decoding/, ...  no Lightning, MLflow, Hydra or DVC
    training/                the only library package that imports Lightning
    pipeline/                the only package that imports MLflow, Hydra/OmegaConf or DVC, and knows paths
    nothing in the library imports tinylm.pipeline; cli.py, the command line, reaches it for pipeline commands
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tinylm"
PIPELINE_ONLY = ("mlflow", "hydra", "omegaconf", "dvc")
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")
FLOOR_1 = {"nn": {"torch", "triton", "math", "functools", "contextlib"},  # nn/: these and no other
           "tokenizer": None}  # None: no tinylm package above
HELPERS = {"atomic", "ctrl_c"}  # floor-1 modules every package may import


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            out.add(".".join(filter(None, (base, node.module))))
    return out


def files(*parts: str) -> list[Path]:
    return sorted(SRC.joinpath(*parts).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


def area(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


@pytest.mark.parametrize("path", files(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_imports_respect_the_floors(path):
    names, where = imports(path), area(path)
    if where != "pipeline":
        assert not {n for n in names if top(n) in PIPELINE_ONLY}, f"{where}/ imports MLflow/Hydra/DVC"
    if where not in ("training", "pipeline"):
        assert not {n for n in names if top(n) in LIGHTNING}, f"{where}/ imports Lightning"
    if where not in ("pipeline", "cli"):
        assert not {n for n in names if n.startswith("tinylm.pipeline")}, f"{where}/ imports the pipeline package"
    if where in ("nn", "tokenizer"):
        ours = {n.split(".")[1] for n in names if n.startswith("tinylm.") and n.count(".")}
        assert ours <= {where} | HELPERS, f"{where}/ imports tinylm.{ours - {where} - HELPERS}"
    if where in HELPERS:
        assert not {n for n in names if top(n) == "tinylm"}, f"{where}.py imports tinylm"
    if where == "nn":
        third_party = {top(n) for n in names} - {"tinylm", "__future__", "typing", "dataclasses"}
        assert third_party <= FLOOR_1["nn"], f"nn/ imports {third_party - FLOOR_1['nn']}"
    if where in ("models", "decoding", "interop", "evaluation", "data"):
        assert not {n for n in names if n.startswith("tinylm.training")}, f"{where}/ imports tinylm.training"


def test_only_the_pipeline_package_names_the_pipelines_folders():
    """Paths such as data/tokens or models/ (what DVC stages read and write) live in tinylm.pipeline."""
    stage_paths = ('"data/', '"models/', '"reports/', '"artifacts/')
    for path in files():
        if area(path) != "pipeline":
            text = path.read_text()
            assert not any(p in text for p in stage_paths), f"{path.relative_to(SRC)} names a pipeline path"
