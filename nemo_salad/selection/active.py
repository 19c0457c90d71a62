"""Step 5 of Stage II selection: draw texts from ``P_target`` up to the budget, synthesize them, and enforce the
budget with the real durations.

For an hours budget the cost of a text that is not synthesized yet is estimated as ``len(text) *
seconds_per_char`` (calibrated on the probe audio); once synthesized its real duration is used. The loop
(i) takes the budget prefix of the draw order under the current costs, (ii) synthesizes every item of that
prefix not synthesized yet *plus the first item that did not fit*, and repeats until nothing new is needed. Items
dropped by the synthesizer (CER filter, bad text) cost nothing and are skipped. The result satisfies
``budget - cost(first item left out) < total <= budget`` with real durations (or exact token counts).

Each round of synthesis goes to its own ``part_<n>`` directory, planned on disk before it starts, so a killed run
resumes the same part with the same texts. The selected cuts are finally copied into ``final/``, a plain lhotse
Shar directory (the training source).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_salad.selection.artefacts import fingerprint, read_json, write_json_atomic
from nemo_salad.selection.sample import BudgetPrefix, DrawSequence, budget_prefix

__all__ = ["ActiveSelection", "IdFilter", "load_selection", "select_and_synthesize"]

log = logging.getLogger(__name__)


class IdFilter:
    """Picklable cut predicate: keeps cuts whose id is in a set (usable by lhotse lazy filters in workers).

    >>> IdFilter(["a"])(type("Cut", (), {"id": "a"})())
    True
    """

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = frozenset(ids)

    def __call__(self, cut: Any) -> bool:
        return cut.id in self.ids


@dataclass
class ActiveSelection:
    """The selected synthetic data.

    Attributes:
        ids (list[str]): selected corpus ids in draw order.
        indices (list[int]): their corpus indices.
        total (float): summed cost (seconds of audio, or tokens).
        unit (str): ``"seconds"`` or ``"tokens"``.
        budget (float): the budget in ``unit``.
        stop_cost (float | None): cost of the first item left out (None if the corpus ran out).
        exhausted (bool): the corpus ran out before the budget.
        parts (list[str]): synthesized part directories (names inside the selection directory).
        n_dropped (int): drawn items dropped by the synthesizer.

    >>> ActiveSelection(["a"], [0], 3.5, "seconds", 4.0, 1.0, False, ["part_000"], 0).total
    3.5
    """

    ids: list[str]
    indices: list[int]
    total: float
    unit: str
    budget: float
    stop_cost: float | None
    exhausted: bool
    parts: list[str]
    n_dropped: int


def _part_costs(directory: Path) -> dict[str, float]:
    from nemo_salad.synthesis import load_synthesized

    return {cut.id: float(cut.duration) for cut in load_synthesized(directory)}


def select_and_synthesize(
    order: DrawSequence,
    ids: Sequence[str],
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    budget: float,
    unit: str,
    backend: Any,
    estimate: Callable[[int], float],
    token_cost: Callable[[int], float] | None = None,
    asr_filter: Any = None,
    batch_size: int = 8,
    shard_size: int = 500,
    max_chars: int = 600,
    extra: dict[str, Any] | None = None,
) -> ActiveSelection:
    """Run the budget loop of the module docstring in ``out_dir``.

    Args:
        order (DrawSequence): the deterministic draw order.
        ids (Sequence[str]): corpus ids.
        texts (Sequence[str]): corpus texts.
        out_dir (str | Path): where ``part_<n>`` directories and ``selection.json`` go.
        budget (float): in seconds (``unit="seconds"``) or tokens (``unit="tokens"``).
        unit (str): ``"seconds"`` or ``"tokens"``.
        backend (TTSBackend): the TTS engine.
        estimate (Callable[[int], float]): pre-synthesis cost estimate of a corpus index (seconds).
        token_cost (Callable[[int], float] | None): exact token count of a corpus index (token budgets).
        asr_filter (CERFilter | None): synthesis CER filter. Default: None.
        batch_size, shard_size, max_chars: synthesis settings.
        extra (dict | None): stored in ``selection.json`` (e.g. P_target, seed). Default: None.

    Returns:
        ActiveSelection: the final selection (also in ``out_dir/selection.json``).

    >>> import tempfile, numpy as np
    >>> from nemo_salad.synthesis import SineBackend
    >>> texts = ["One short text.", "Another one here.", "And a third."]
    >>> order = DrawSequence(np.zeros(3, int), np.array([1.0]), seed=0)
    >>> sel = select_and_synthesize(order, ["a", "b", "c"], texts, tempfile.mkdtemp(), budget=2.0, unit="seconds",
    ...                             backend=SineBackend(), estimate=lambda i: 0.06 * len(texts[i]))
    >>> len(sel.ids), sel.total <= 2.0 < sel.total + sel.stop_cost
    (2, True)
    """
    from nemo_salad.synthesis import synthesize_to_shar, text_cuts

    if unit not in ("seconds", "tokens"):
        raise ValueError(f"unit must be 'seconds' or 'tokens', got {unit!r}")
    if unit == "tokens" and token_cost is None:
        raise ValueError("a token budget needs token_cost (a tokenizer)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[int, float | None] = {}  # corpus index -> real duration (None: dropped by the synthesizer)
    index_of = {doc_id: i for i, doc_id in enumerate(ids)}
    parts: list[str] = []

    def cost(i: int) -> float | None:
        if i in done:
            if done[i] is None:
                return None
            return token_cost(i) if unit == "tokens" else done[i]  # type: ignore[misc,return-value]
        return token_cost(i) if unit == "tokens" else estimate(i)  # type: ignore[misc]

    while True:
        prefix: BudgetPrefix = budget_prefix(order, cost, budget)
        wanted = prefix.indices + ([] if prefix.stop is None else [order[prefix.stop]])
        part = out / f"part_{len(parts):03d}"
        plan = read_json(part / "plan.json")
        if plan is None:
            need = [i for i in wanted if i not in done]
            if not need:
                break
            if part.exists():  # a part directory without a plan was never started properly
                shutil.rmtree(part)
            write_json_atomic(part / "plan.json", {"ids": [ids[i] for i in need]})
        else:
            need = [index_of[doc_id] for doc_id in plan["ids"]]
        marker = read_json(part / "part.json")
        if marker is None:
            items = [{"id": ids[i], "text": texts[i]} for i in need]
            synthesize_to_shar(text_cuts(items, source="active"), backend, part, batch_size=batch_size,
                               shard_size=shard_size, asr_filter=asr_filter, max_chars=max_chars, progress=False)
            marker = {"durations": _part_costs(part)}
            write_json_atomic(part / "part.json", marker)
        durations = marker["durations"]
        for i in need:
            done[i] = durations.get(ids[i])
        parts.append(part.name)
        log.info("active selection: part %d synthesized %d items (%d dropped)", len(parts) - 1, len(need),
                 sum(durations.get(ids[i]) is None for i in need))
    selection = ActiveSelection(
        ids=[ids[i] for i in prefix.indices], indices=[int(i) for i in prefix.indices], total=float(prefix.total),
        unit=unit, budget=float(budget), stop_cost=prefix.stop_cost, exhausted=prefix.exhausted, parts=parts,
        n_dropped=sum(v is None for v in done.values()))
    _write_final(out, parts, selection.ids, shard_size)
    if selection.exhausted:
        log.warning("active selection: the corpus ran out at %.1f of %.1f %s", selection.total, budget, unit)
    write_json_atomic(out / "selection.json", {**selection.__dict__, **(extra or {}),
                                               "fingerprint": fingerprint(selection.ids, extra)})
    return selection


def _write_final(selection_dir: Path, parts: Sequence[str], ids: Sequence[str], shard_size: int) -> Path:
    """Copy the selected cuts of all parts into ``final/``: a plain lhotse Shar directory (``cuts`` + ``recording``
    fields) that ``CutSet.from_shar(in_dir=...)`` reads, written to a temporary sibling and renamed when complete."""
    from lhotse import CutSet

    from nemo_salad.synthesis import load_synthesized

    final = selection_dir / "final"
    key = fingerprint(list(ids))
    marker = read_json(selection_dir / "final.json")
    if final.is_dir() and marker is not None and marker.get("ids") == key:
        return final
    shutil.rmtree(final, ignore_errors=True)
    for stale in selection_dir.glob(".final.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = selection_dir / f".final.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    keep = IdFilter(ids)
    cuts = CutSet()
    for i, part in enumerate(parts):
        more = load_synthesized(selection_dir / part).filter(keep)
        cuts = more if i == 0 else cuts + more
    if ids:
        cuts.to_shar(str(tmp), fields={"recording": "flac"}, shard_size=shard_size)
    os.replace(tmp, final)
    write_json_atomic(selection_dir / "final.json", {"ids": key, "n": len(ids)})
    return final


def load_selection(selection_dir: str | Path) -> Any:
    """The selected synthetic cuts of a finished round: a lazy CutSet over ``<selection_dir>/final`` (plain Shar,
    also usable as a ``data.sources`` entry ``{shar: <selection_dir>/final}``).

    Args:
        selection_dir (str | Path): the directory holding ``selection.json``.

    Raises:
        FileNotFoundError: if the selection is not finished.

    >>> import tempfile
    >>> load_selection(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: ... holds no finished selection (selection.json and final/)
    """
    from lhotse import CutSet

    final = Path(selection_dir) / "final"
    if read_json(Path(selection_dir) / "selection.json") is None or not final.is_dir():
        raise FileNotFoundError(f"{selection_dir} holds no finished selection (selection.json and final/)")
    if not any(final.glob("cuts.*")):
        return CutSet()
    return CutSet.from_shar(in_dir=str(final))
