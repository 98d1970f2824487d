"""Atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hi")
    >>> target.read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(
    path: str | Path, data: Any, *, allow_nan: bool = True, default: Callable[[Any], Any] | None = str
) -> None:
    """Indented JSON, written atomically. `allow_nan=False` and `default=None` make it strict."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan, default=default) + "\n")


def replace_dir(complete: Path, final: Path) -> None:
    """Swap the fully written folder `complete` in as `final`. At every instant one complete copy exists:
    `final`, or `final.old` during the swap (`existing_dir` finds it after a crash)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    complete.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A fresh, empty sibling folder to write into; swapped in as `final` (`replace_dir`) when the block
    completes, removed when it fails, so `final` is never seen half written."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def existing_dir(final: Path) -> Path | None:
    """`final`, or the copy a crash in the middle of `replace_dir` left behind, or None."""
    for candidate in (final, final.with_name(final.name + ".old")):
        if candidate.is_dir():
            return candidate
    return None


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """sha256 and size of a data file, so a model or an audit says exactly what it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}
