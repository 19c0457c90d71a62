"""The on-disk layout of a synthesized corpus: lhotse Shar shards committed atomically, and its done-ids index.

``out_dir`` holds, per shard ``N``::

    recording.N.tar      FLAC audio (lhotse ``AudioTarWriter``)
    dropped.N.jsonl      ids skipped or filtered while this shard was made, with the reason
    cuts.N.jsonl.gz      the cuts (lhotse ``JsonlShardWriter``) - renamed into place LAST: it commits the shard

plus ``report.json`` and a ``.work/`` folder (lock, temporary shards). A shard is built in ``.work/`` and its files
are renamed in the order above, so a run killed at any instant leaves complete shards and at most one uncommitted
remainder, which the next run deletes. The done-ids index is read from committed shards only (cut ids plus dropped
ids), so it cannot drift from what is on disk.

Read the corpus with :func:`load_synthesized` (``CutSet.from_shar(in_dir=...)`` would also pick up ``report.json``
and ``dropped.*`` as fields).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.shar.writers import AudioTarWriter, JsonlShardWriter

__all__ = ["OutputState", "ShardBuilder", "load_synthesized", "output_lock", "scan_output", "shar_fields"]

log = logging.getLogger(__name__)

WORK_DIR = ".work"
_SHARD_FILE = re.compile(r"^(cuts|recording|dropped)\.(\d{6})\.(jsonl\.gz|tar|jsonl)$")
_EXPECTED_SUFFIX = {"cuts": "jsonl.gz", "recording": "tar", "dropped": "jsonl"}


def _name(kind: str, index: int) -> str:
    return f"{kind}.{index:06d}.{_EXPECTED_SUFFIX[kind]}"


@dataclass
class OutputState:
    """What a previous run left in ``out_dir``.

    Attributes:
        done_ids (set[str]): ids in committed shards, written or dropped.
        shards (list[int]): indices of committed shards, ascending.
        n_cuts (int): number of written cuts in committed shards.
        removed (list[str]): uncommitted files deleted by :func:`scan_output`.
    """

    done_ids: set[str] = field(default_factory=set)
    shards: list[int] = field(default_factory=list)
    n_cuts: int = 0
    removed: list[str] = field(default_factory=list)

    @property
    def next_shard(self) -> int:
        return self.shards[-1] + 1 if self.shards else 0


def _shard_files(out_dir: Path) -> dict[int, dict[str, Path]]:
    shards: dict[int, dict[str, Path]] = {}
    for path in out_dir.iterdir():
        match = _SHARD_FILE.match(path.name)
        if match and match.group(3) == _EXPECTED_SUFFIX[match.group(1)]:
            shards.setdefault(int(match.group(2)), {})[match.group(1)] = path
    return shards


def _read_ids(path: Path, gz: bool) -> list[str]:
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["id"] for line in handle if line.strip()]


def scan_output(out_dir: str | Path, clean: bool = True) -> OutputState:
    """Index the committed shards of ``out_dir`` and (with ``clean``) delete what a killed run left uncommitted.

    Raises:
        ValueError: if a committed shard lacks its audio or an id occurs in two shards (a damaged corpus).

    >>> import tempfile
    >>> scan_output(tempfile.mkdtemp()).next_shard
    0
    """
    out_dir = Path(out_dir)
    state = OutputState()
    if not out_dir.is_dir():
        return state
    if clean:
        shutil.rmtree(out_dir / WORK_DIR / "tmp", ignore_errors=True)
    owner: dict[str, int] = {}
    for index, files in sorted(_shard_files(out_dir).items()):
        if "cuts" not in files:
            if clean:
                for path in files.values():
                    path.unlink()
                    state.removed.append(path.name)
            continue
        missing = [kind for kind in ("recording", "dropped") if kind not in files]
        if missing:
            raise ValueError(f"shard {index} in {out_dir} has {files['cuts'].name} but no {missing}: the corpus was "
                             "damaged outside the writer; delete that shard's files and rerun to redo its items")
        written = _read_ids(files["cuts"], gz=True)
        dropped = [json.loads(line)["id"] for line in files["dropped"].read_text("utf-8").splitlines() if line.strip()]
        for cut_id in written + dropped:
            if cut_id in owner:
                raise ValueError(f"id {cut_id!r} occurs in shards {owner[cut_id]} and {index} of {out_dir}")
            owner[cut_id] = index
        state.shards.append(index)
        state.n_cuts += len(written)
    state.done_ids = set(owner)
    if state.removed:
        log.warning("removed uncommitted files of an interrupted run in %s: %s", out_dir, state.removed)
    return state


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold ``out_dir/.work/lock`` for one writer at a time (released by the OS if the process dies).

    Raises:
        RuntimeError: if another process is writing to ``out_dir``.
    """
    lock_path = Path(out_dir) / WORK_DIR / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RuntimeError(f"another synthesis run is writing to {out_dir} (lock {lock_path} is held)") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class ShardBuilder:
    """Collects one shard in ``out_dir/.work/tmp/N`` and commits it with :meth:`commit`.

    Args:
        out_dir (Path): corpus directory.
        index (int): shard number.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with ShardBuilder(out, 0) as shard:
    ...     _ = shard.add(MonoCut("a", 0, 0, 0, supervisions=[SupervisionSegment("a", "a", 0, 0, text="hi")]),
    ...               np.zeros(1600, np.float32) + 0.1, 16000, "hi", {"tts_backend": "sine"})
    ...     shard.drop("b", "empty_text")
    ...     shard.commit()
    >>> sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    ['cuts.000000.jsonl.gz', 'dropped.000000.jsonl', 'recording.000000.tar']
    """

    def __init__(self, out_dir: Path, index: int) -> None:
        self.out_dir, self.index = Path(out_dir), index
        self.tmp = self.out_dir / WORK_DIR / "tmp" / f"{index:06d}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self._audio = AudioTarWriter(str(self.tmp / "recording.tar"), shard_size=None, format="flac")
        self._cuts = JsonlShardWriter(str(self.tmp / "cuts.jsonl.gz"), shard_size=None)
        self._dropped = open(self.tmp / "dropped.jsonl", "w", encoding="utf-8")
        self.n_cuts = 0
        self.n_dropped = 0

    def __enter__(self) -> ShardBuilder:
        self._audio.__enter__()
        self._cuts.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _close(self) -> None:
        self._audio.close()
        self._cuts.close()
        self._dropped.close()

    def add(self, source: Any, audio: np.ndarray, sample_rate: int, text: str, custom: dict[str, Any],
            alignment: dict[str, Any] | None = None) -> MonoCut:
        """Store ``audio`` ``(T,)`` float32 in [-1, 1] as the recording of a new cut made from ``source``."""
        n = int(audio.shape[0])
        duration = n / sample_rate
        recording = Recording(id=source.id, sources=[AudioSource(type="shar", channels=[0], source="")],
                              sampling_rate=sample_rate, num_samples=n, duration=duration)
        language = source.supervisions[0].language if source.supervisions else None
        supervision = SupervisionSegment(id=source.id, recording_id=source.id, start=0.0, duration=duration,
                                         channel=0, text=text, language=language, alignment=alignment)
        keep = {k: v for k, v in (source.custom or {}).items() if k not in ("shard_origin", "shar_epoch")}
        cut = MonoCut(id=source.id, start=0.0, duration=duration, channel=0, recording=recording,
                      supervisions=[supervision], custom={**keep, **custom})
        self._audio.write(source.id, audio[None, :], sample_rate, manifest=recording)
        self._cuts.write(cut)
        self.n_cuts += 1
        return cut

    def drop(self, cut_id: str, reason: str, **detail: Any) -> None:
        """Record that ``cut_id`` was skipped or filtered, and why (kept with the shard, read on resume)."""
        self._dropped.write(json.dumps({"id": cut_id, "reason": reason, **detail}, ensure_ascii=False) + "\n")
        self.n_dropped += 1

    def commit(self) -> None:
        """Close the shard's files and rename them into ``out_dir``; the cuts file goes last."""
        self._close()
        if self.n_cuts == 0:  # lhotse writers create files lazily; an all-dropped shard still needs both
            with gzip.open(self.tmp / "cuts.jsonl.gz", "wt"):
                pass
            import tarfile

            tarfile.open(self.tmp / "recording.tar", "w").close()
        for kind, tmp_name in (("recording", "recording.tar"), ("dropped", "dropped.jsonl"),
                               ("cuts", "cuts.jsonl.gz")):
            _fsync(self.tmp / tmp_name)
            os.replace(self.tmp / tmp_name, self.out_dir / _name(kind, self.index))
        dir_fd = os.open(self.out_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def shar_fields(out_dir: str | Path) -> dict[str, list[str]]:
    """``{"cuts": [...], "recording": [...]}`` paths of the committed shards, for ``CutSet.from_shar(fields=...)``."""
    out_dir = Path(out_dir)
    state = scan_output(out_dir, clean=False)
    return {kind: [str(out_dir / _name(kind, i)) for i in state.shards] for kind in ("cuts", "recording")}


def load_synthesized(out_dir: str | Path) -> CutSet:
    """All committed shards of a synthesized corpus as a lazy CutSet whose cuts load their audio.

    Args:
        out_dir (str | Path): the directory given to ``synthesize_to_shar``.

    Returns:
        CutSet: lazy; empty (eager) when nothing is committed yet.

    Raises:
        FileNotFoundError: if ``out_dir`` does not exist.

    >>> from nemo_salad.synthesis import SineBackend, synthesize_to_shar, text_cuts
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> _ = synthesize_to_shar(text_cuts([("a", "Hello.")]), SineBackend(), out, progress=False)
    >>> [(c.id, c.supervisions[0].text, c.load_audio().shape) for c in load_synthesized(out)]
    [('a', 'Hello.', (1, 5760))]
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"synthesized corpus directory {out_dir} does not exist")
    fields = shar_fields(out_dir)
    if not fields["cuts"]:
        return CutSet()
    return CutSet.from_shar(fields=fields)
