"""The on-disk cache for derived offline assets (dequantised weights, synthesized corpora).

Location: ``$SALAD_CACHE`` if set, else ``~/.cache/nemo_salad``. :func:`cached_dir` builds an entry once,
under a file lock, in a temporary sibling directory that is renamed into place only when complete, so a
killed build never leaves a half-written entry behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cache_root", "cached_dir", "file_lock"]


def cache_root() -> Path:
    """``$SALAD_CACHE`` or ``~/.cache/nemo_salad`` (created if missing).

    >>> cache_root().is_dir()
    True
    """
    root = Path(os.environ.get("SALAD_CACHE") or Path.home() / ".cache" / "nemo_salad")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_dir(name: str, build: Callable[[Path], None], root: Path | None = None) -> Path:
    """Return ``<root>/<name>``, calling ``build(tmp_dir)`` to create it the first time.

    Args:
        name (str): entry name (a directory under the cache root).
        build (Callable[[Path], None]): fills an empty directory it is given.
        root (Path | None): cache root. Default: :func:`cache_root`.

    Returns:
        Path: the complete entry.

    >>> import tempfile
    >>> d = cached_dir("demo", lambda p: (p / "x.txt").write_text("hi"), root=Path(tempfile.mkdtemp()))
    >>> (d / "x.txt").read_text()
    'hi'
    """
    root = root or cache_root()
    target = root / name
    if target.is_dir():
        return target
    with file_lock(root / f".{name}.lock"):
        if target.is_dir():  # built by another process while we waited
            return target
        tmp = root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
