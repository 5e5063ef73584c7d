"""Did this run reproduce the reference? The workspace's dvc.lock against a reference dvc.lock (by default the
committed one, `git show HEAD:dvc.lock`), stage by stage and output by output.

dvc.lock records, per stage, the md5 of every dependency (code, data, params) and of every output (a folder: of
its file listing). Files under WALL_CLOCK (reports/speed/) hold seconds and tokens/s and differ between any
two runs, as outputs and as inputs (of summarize, which only logs them); every other output is a function of
its stage's other inputs. So a stage whose inputs match the reference's:

    reproduced   every output other than WALL_CLOCK has the reference's md5
    differs      some output does not: same code, data and params, other bytes (another CPU or torch build
                 can do that: float sums run in another order)

and a stage whose inputs differ (changed code, data or params) is `inputs changed`: its outputs are expected
to differ. `dvc metrics diff` shows by how much the numbers moved.

    python -m tinylm.pipeline.reference [--ref REV] [--lock dvc.lock]   exit 0 reproduced, 1 not, 2 no reference
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from tinylm.pipeline.paths import SPEED

WALL_CLOCK = SPEED.as_posix() + "/"  # dvc.lock's paths are POSIX


def _entries(stage: dict, key: str) -> dict[str, str | None]:
    return {e["path"]: e.get("md5") for e in stage.get(key, [])}


def _inputs(stage: dict) -> tuple:
    """What a stage's outputs are a function of: its deps (wall-clock files left out: `summarize` reads them
    only to log them), params and command."""
    deps = {p: m for p, m in _entries(stage, "deps").items() if not p.startswith(WALL_CLOCK)}
    return deps, stage.get("params", {}), stage.get("cmd")


def compare(reference: dict, current: dict) -> dict[str, dict]:
    """Stage name -> {"status": reproduced | differs | inputs changed | missing | new, "differs": [output paths
    whose md5 differs, WALL_CLOCK ones left out]}, for parsed dvc.lock documents."""
    ref, cur = reference.get("stages", {}), current.get("stages", {})
    out = {}
    for name in [*ref, *(n for n in cur if n not in ref)]:
        if name not in cur or name not in ref:
            out[name] = {"status": "missing" if name not in cur else "new", "differs": []}
            continue
        a, b = _entries(ref[name], "outs"), _entries(cur[name], "outs")
        differs = sorted(p for p in a.keys() | b.keys() if not p.startswith(WALL_CLOCK) and a.get(p) != b.get(p))
        status = "inputs changed" if _inputs(ref[name]) != _inputs(cur[name]) else \
            "differs" if differs else "reproduced"
        out[name] = {"status": status, "differs": differs}
    return out


def reproduced(result: dict[str, dict]) -> bool:
    return all(r["status"] == "reproduced" for r in result.values())


def committed_lock(rev: str = "HEAD", path: str = "dvc.lock") -> dict | None:
    """dvc.lock as committed at `rev`, or None where git has none."""
    got = subprocess.run(["git", "show", f"{rev}:./{path}"], capture_output=True, text=True)
    return yaml.safe_load(got.stdout) if got.returncode == 0 else None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="HEAD", help="the git revision holding the reference dvc.lock")
    ap.add_argument("--lock", default="dvc.lock", type=Path, help="this run's dvc.lock")
    a = ap.parse_args(argv)
    reference = committed_lock(a.ref, a.lock.as_posix())
    if reference is None:
        print(f"no reference: git has no {a.lock} at {a.ref}", file=sys.stderr)
        return 2
    if not a.lock.exists():
        print(f"no {a.lock}: run the pipeline first (`dvc repro`)", file=sys.stderr)
        return 2
    result = compare(reference, yaml.safe_load(a.lock.read_text()))
    width = max(map(len, result))
    for name, r in result.items():
        print(f"{name:<{width}}  {r['status']}" + (f": {', '.join(r['differs'])}" if r["differs"] else ""))
    ok = reproduced(result)
    print(f"{'reproduced' if ok else 'not reproduced'}: {a.ref}'s {a.lock} against this run "
          f"(outputs under {WALL_CLOCK} are wall-clock figures, left out)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
