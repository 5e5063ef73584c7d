"""A stage's code dependencies, derived from the imports of its entry script, so dvc.yaml cannot drift.

    closure(pipelines/X.py) = the script + the modules beside it that it imports (pipelines/_checkout.py) +
    every `tinylm.*` module under src/ it imports, transitively (the stage itself lives in
    tinylm.pipeline.stages.X); imports anywhere in a file count (a function-level import runs when the
    function does), and so does each package's __init__.py on the way to a module (Python executes it).

Rule: bookkeeping modules are left out, and so is what only they import: MLflow conventions
(`tinylm/pipeline/tracking.py`) and atomic file writes (`tinylm/atomic.py`) never change what a stage computes.
Everything else a stage runs is a dep. The config module (`tinylm/pipeline/config.py`) is one of every stage,
as it turns params.yaml into the settings a stage runs with (types, each group's trainer overrides), but what it
imports is not followed: it builds model configs only to validate sizes, and a stage that builds a model imports
the models itself. The training stages hash the same closure into their resume fingerprint.

In dvc.yaml a folder stands for its .py files when all of them are in the closure (`src/tinylm/nn`), else the
files are listed. `python -m tinylm.pipeline.deps` says which stages disagree with their imports; `--write`
rewrites the code lines (`pipelines/`, `src/`) of each stage's `deps:` in dvc.yaml and keeps the rest.
"""

import ast
import re
import sys
from pathlib import Path

import yaml

BOOKKEEPING = ("src/tinylm/pipeline/tracking.py", "src/tinylm/atomic.py")
NOT_FOLLOWED = ("src/tinylm/pipeline/config.py",)
CODE = ("pipelines/", "src/")


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module `name` under src/, else None (a third-party module)."""
    parts = name.split(".")
    if parts[0] != "tinylm":
        return None
    for path in ((root / "src").joinpath(*parts).with_suffix(".py"), (root / "src").joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def _imported(path: Path, root: Path) -> set[Path]:
    """Repository files that `path` imports (and the __init__.py of each package on the way)."""
    in_src = path.is_relative_to(root / "src")
    package = path.relative_to(root / "src").with_suffix("").parts[:-1] if in_src else ()
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(filter(None, (base, node.module)))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    # a script's modules beside it (its folder heads sys.path)
    files = set() if in_src else {path.parent / f"{n}.py" for n in names if (path.parent / f"{n}.py").is_file()}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # tinylm/__init__.py, tinylm/data/__init__.py, tinylm/data/x.py
            found = _module_file(".".join(parts[:i]), root)
            if found is not None:
                files.add(found)
    return files - {path}


def closure(entry: str | Path, root: str | Path = ".") -> set[str]:
    """Repository-relative paths of the code `entry` runs (see the module docstring for the rule)."""
    root = Path(root).resolve()
    todo, seen = [root / entry], set()
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in seen or rel in BOOKKEEPING:
            continue
        seen.add(rel)
        if rel not in NOT_FOLLOWED:
            todo.extend(_imported(path, root))
    return seen


def compress(files: set[str], root: str | Path = ".") -> list[str]:
    """Folders whose .py files are all in `files` stand for them (the largest such folder); sorted."""
    root, out, left = Path(root), set(), set(files)
    folders = sorted({Path(f).parent for f in files if f.startswith("src/")}, key=lambda p: len(p.parts))
    for folder in folders:
        members = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        if members and members <= files and not any(folder.is_relative_to(Path(o)) for o in out):
            out.add(folder.as_posix())
            left -= members
    return sorted(out | left)


def _stage_entries(dvc_yaml: Path) -> dict[str, str]:
    """Stage name -> its entry script (the `python pipelines/X.py` of its cmd)."""
    out = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        cmd = (stage.get("do") or stage)["cmd"]
        m = re.search(r"python3? (pipelines/\S+\.py)", cmd)
        if m:
            out[name] = m.group(1)
    return out


def declared(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the code deps dvc.yaml lists for it."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: [d for d in (stages[name].get("do") or stages[name]).get("deps", []) if d.startswith(CODE)]
            for name in _stage_entries(dvc_yaml)}


def derived(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the code deps its imports call for."""
    root = dvc_yaml.parent
    return {name: compress(closure(entry, root), root) for name, entry in _stage_entries(dvc_yaml).items()}


def write(dvc_yaml: Path) -> None:
    """Replace each stage's code deps in dvc.yaml by the derived ones (first in its list), keeping the rest."""
    want, lines, out = derived(dvc_yaml), dvc_yaml.read_text().splitlines(keepends=True), []
    stage, deps_indent = None, None
    for line in lines:
        if m := re.match(r"^  (\w+):\s*$", line):
            stage, deps_indent = m.group(1), None
        if deps_indent is not None and re.match(rf"^{deps_indent}  - ", line):
            if line.strip()[2:].startswith(CODE):
                continue  # an old code dep: the derived list replaces it
        elif deps_indent is not None:
            deps_indent = None
        out.append(line)
        if (m := re.match(r"^(\s+)deps:\s*$", line)) and stage in want:
            deps_indent = m.group(1)
            out.extend(f"{deps_indent}  - {d}\n" for d in want[stage])
    dvc_yaml.write_text("".join(out))


def main(argv: list[str]) -> int:
    dvc_yaml = Path("dvc.yaml")
    if argv == ["--write"]:
        write(dvc_yaml)
    have, want = declared(dvc_yaml), derived(dvc_yaml)
    bad = {s: (sorted(set(want[s]) - set(have[s])), sorted(set(have[s]) - set(want[s]))) for s in want
           if sorted(have[s]) != want[s]}
    for stage, (missing, extra) in bad.items():
        print(f"{stage}: missing {missing}, not imported {extra}")
    if bad:
        print("fix: python -m tinylm.pipeline.deps --write")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
