"""Atomic outputs: write into a temporary sibling, rename over the target at the end.

An interrupted or failing stage leaves the previous output (or none), never a half-written one, and no
temporary file behind. A full disk, or an output folder that cannot be written (permissions, a read-only
filesystem), raises OSError (same errno) whose message names the output and the fix.
"""

import csv
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def _explained(path: Path, creating_in: Path | None = None) -> Iterator[None]:
    """Re-raise a full disk met while writing `path` (and, while creating files in folder `creating_in`, an
    unwritable folder) as an OSError naming `path` and the fix; other errors pass unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_FULL:
            msg = (f"cannot write {path}: the disk is full ({e.strerror}); free space on it and re-run "
                   f"(the previous {path.name}, if any, is unchanged)")
        elif creating_in and e.errno in NOT_WRITABLE:
            folder = next(p for p in (creating_in, *creating_in.parents) if p.exists())  # the one that refused
            msg = (f"cannot write {path}: folder {folder} is not writable ({e.strerror}); make it writable "
                   f"(chmod u+w {folder}, or remount it read-write) or run from a writable copy")
        else:
            raise
        raise OSError(e.errno, msg) from e


def check_writable(folder: str | Path) -> None:
    """Create `folder` if needed and check that a file can be made in it, so that a stage fails before its
    work, not after, with the message of an unwritable folder."""
    folder = Path(folder)
    with _explained(folder, creating_in=folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path`, on error it goes."""
    path, tmp = Path(path), None
    try:  # from the folder's creation on: a Ctrl-C anywhere after it still removes it
        with _explained(path, creating_in=path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        with _explained(path):
            yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(path)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path` (mode 0644), on error it goes."""
    path, tmp = Path(path), None
    try:  # from the file's creation on: a Ctrl-C anywhere after it still removes it
        with _explained(path, creating_in=path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        with _explained(path):
            yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically, indented, keys in insertion order."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str]) -> None:
    """Write rows as CSV atomically, a header line of `fieldnames` first (a row's missing keys: empty cells)."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)
