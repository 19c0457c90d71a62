"""On-disk artefacts of a selection round: atomic JSON, content hashes and input fingerprints.

Every step writes its outputs and then a JSON marker holding the fingerprint of its inputs (and, for files
that are cheap to hash, the SHA-256 of its outputs). A rerun reuses a step only when the marker exists, its
input fingerprint equals the one computed now and its output hashes still match the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "fingerprint", "read_json", "write_json_atomic"]


def fingerprint(*parts: Any) -> str:
    """SHA-256 of the JSON encoding of ``parts`` (keys sorted, floats as repr).

    >>> fingerprint("a", {"k": 1}) == fingerprint("a", {"k": 1}), fingerprint("a") == fingerprint("b")
    (True, False)
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:12]
    'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename (never half-written).

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.json"; write_json_atomic(p, {"x": 1}); read_json(p)
    {'x': 1}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if it is missing or unreadable."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
