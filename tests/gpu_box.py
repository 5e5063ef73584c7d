"""A Python environment shaped like the lent GPU machine, built from this one's installed packages, no network.

That machine has torch, pytorch-lightning, transformers, triton, pytest and hypothesis (and what they depend on)
but none of tinylm's other dependencies (hydra-core, omegaconf, mlflow, dvc, datasets, matplotlib, sacrebleu,
...); tinylm runs there from `PYTHONPATH=src`. `make_box(dest)` makes a venv without site-packages of its own
and links into it the distributions in the dependency closure of BOX, so a script that needs anything else
fails here as it would there.
"""

import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

BOX = ("torch", "pytorch-lightning", "transformers", "triton", "pytest", "hypothesis")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=BOX) -> dict[str, metadata.Distribution]:
    """Installed distributions reachable from `roots` through their requirements (markers and extras honoured)."""
    site = sysconfig.get_paths()["purelib"]  # not sys.path: setuptools puts its vendored copies there
    installed = {_key(d.metadata["Name"]): d for d in metadata.distributions(path=[site])}
    found: dict[str, metadata.Distribution] = {}
    todo = [(_key(r), frozenset()) for r in roots]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name not in installed:
            continue
        seen.add((name, extras))
        dist = found[name] = installed[name]
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = any(req.marker is None or req.marker.evaluate({**default_environment(), "extra": e})
                         for e in extras | {""})
            if wanted:
                todo.append((_key(req.name), frozenset(req.extras)))
    return found


def make_box(dest: Path) -> Path:
    """A venv at `dest` holding BOX's closure (linked, not copied); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in closure().values():
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            if (here / top).exists() and not (site / top).exists():
                (site / top).symlink_to(here / top)
    return python
