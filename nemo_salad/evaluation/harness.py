"""The evaluation run: every system scores the same items, each with as many few-shot examples as fit its own context.

For each benchmark: draw the shot candidates, voice the spoken texts once (when a system needs audio), then in
chunks of items: render the spoken segments per system, choose per item and per system the number of shots
(speech frames count as tokens), and score all options with
:func:`~nemo_salad.evaluation.scoring.score_shared_context`.

Shots (``ScoringSettings.shots``):

* ``None`` (the paper: "as many examples as possible (up to 5) until the 2048-token (audio) context window is
  filled"): each system takes the largest ``k <= max_shots`` whose prompt fits ``max_tokens`` in *that system*,
  so a system's prompts — and the text topline's accuracy, the base of every gap — do not depend on which other
  systems are evaluated beside it. A speech system with long audio then sees fewer shots than the topline.
* an int ``k``: exactly ``k`` shots in every system (the same prompt everywhere). An item whose ``k``-shot
  prompt exceeds ``max_tokens`` in any system is left out of every system and counted as
  ``skipped["too_long_for_shots"]``; one whose group has fewer than ``k`` shot candidates as
  ``skipped["too_few_shots"]`` (both logged).

Every system scores the same items (the gap compares them item by item): an item whose zero-shot prompt does
not fit in some system is left out of all (``skipped["too_long"]``, logged with the system), as is an item whose
speech synthesis failed (``skipped["no_speech"]``). These counted skips, and shot candidates whose synthesis failed
(logged), are the only ways the other systems can change the topline's result. The shots of every system are the
same seeded candidates in the same order; a system using ``k`` shots uses the first ``k``: per item,
``systems[name]["n_shots"]`` is the count of system ``name`` and ``shot_ids[:k]`` its shots (``n_shots`` of the item
is the fewest of any system).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from nemo_salad.evaluation.items import MCItem, Segment
from nemo_salad.evaluation.loaders import Benchmark
from nemo_salad.evaluation.prompts import (
    choose_shot_candidates,
    fit_shots,
    prompt_segments,
    shot_segments,
    shots_for,
    spoken_token_ids,
    text_token_ids,
)
from nemo_salad.evaluation.results import METRICS, BenchmarkResult, EvalResults, SystemScores, accuracy
from nemo_salad.evaluation.scoring import ScoreRequest, normalised_scores, score_shared_context
from nemo_salad.evaluation.spoken import SpokenSource
from nemo_salad.evaluation.systems import ROLE_LABELS

__all__ = ["Renderer", "ScoringSettings", "evaluate", "evaluate_benchmark"]

log = logging.getLogger(__name__)


@dataclass
class ScoringSettings:
    """How prompts are built and scored.

    Args:
        max_tokens (int): context budget: preamble + shots + query + longest option, speech frames counted as
            tokens (the paper's 2048). Default: 2048.
        max_shots (int): at most this many few-shot examples per system (when ``shots`` is None). Default: 5.
        shots (int | None): None: each system takes as many shots as fit its own context, up to ``max_shots``;
            an int: exactly that many in every system (``max_shots`` is then not used), an item whose prompt
            does not fit at that count in some system is skipped in all (see the module docstring).
            Default: None.
        shots_modality (str): "speech" (the shots' questions are spoken too) or "text". Default: "speech".
        primary (str): the metric of the tables and gaps: "sum", "per_token" or "per_char" (acc_norm).
            Default: "per_char".
        batch_tokens (int | None): positions (rows x padded length) per scoring forward; None picks one item per
            forward on CPU (batching measured no faster there, see ``docs/benchmarks.md``) and 16384 on
            GPU. Default: None.
        chunk_items (int): items rendered at once (bounds memory for speech embeddings). Default: 256.
        seed (int): shot draw seed. Default: 0.
    """

    max_tokens: int = 2048
    max_shots: int = 5
    shots: int | None = None
    shots_modality: str = "speech"
    primary: str = "per_char"
    batch_tokens: int | None = None
    chunk_items: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shots_modality not in ("speech", "text"):
            raise ValueError(f"shots_modality={self.shots_modality!r}; expected 'speech' or 'text'")
        if self.primary not in METRICS:
            raise ValueError(f"primary={self.primary!r}; expected one of {METRICS}")
        if self.max_shots < 0 or self.max_tokens < 1:
            raise ValueError(f"need max_shots >= 0 and max_tokens >= 1, got {self.max_shots}, {self.max_tokens}")
        if self.shots is not None and (isinstance(self.shots, bool) or not isinstance(self.shots, int)
                                       or self.shots < 0):
            raise ValueError(f"shots={self.shots!r}; expected null (as many as fit per system, up to max_shots) "
                             "or an integer >= 0 (exactly that many in every system)")

    @property
    def shot_limit(self) -> int:
        """Most shots any prompt can hold: ``shots`` when fixed, else ``max_shots``.

        >>> ScoringSettings(max_shots=5).shot_limit, ScoringSettings(max_shots=5, shots=2).shot_limit
        (5, 2)
        """
        return self.max_shots if self.shots is None else self.shots


class Renderer:
    """Turns prompt segments into LLM inputs for one system; caches tokenization and spoken inputs.

    Shared by the log-likelihood harness and the generate protocol (:mod:`nemo_salad.evaluation.generate`).

    Args:
        system (System): the system whose inputs are rendered (see :mod:`nemo_salad.evaluation.systems`).
        spoken_shots (bool): spoken segments of few-shot examples are heard (True) or read as text (False).

    Attributes:
        seconds (float): time spent in ``system.spoken_inputs`` (speech encoding / ASR).

    >>> r = Renderer(TextSystem(llm, tokenizer), spoken_shots=True)  # doctest: +SKIP
    >>> r.prepare({"2+2?"}, {}); r.context(prompt_segments(item, [])).shape  # doctest: +SKIP
    torch.Size([17, 576])
    """

    def __init__(self, system: Any, spoken_shots: bool) -> None:
        self.system, self.spoken_shots = system, spoken_shots
        self.ids: dict[str, list[int]] = {}
        self.spoken_text_ids: dict[str, list[int]] = {}
        self.spoken: dict[str, list[int] | Tensor] = {}
        self.seconds = 0.0

    def prepare(self, texts: set[str], cuts: dict[str, Any]) -> None:
        todo = sorted(texts - self.spoken.keys())
        if todo:
            start = time.perf_counter()
            self.spoken.update(self.system.spoken_inputs(todo, cuts))
            self.seconds += time.perf_counter() - start

    def forget(self, texts: set[str]) -> None:
        for t in texts:
            self.spoken.pop(t, None)

    def piece(self, seg: Segment, in_shot: bool) -> list[int] | Tensor:
        if not seg.spoken:
            if seg.text not in self.ids:
                self.ids[seg.text] = text_token_ids(self.system.tokenizer, seg.text)
            return self.ids[seg.text]
        if in_shot and not self.spoken_shots:
            if seg.text not in self.spoken_text_ids:
                self.spoken_text_ids[seg.text] = spoken_token_ids(self.system.tokenizer, seg.text)
            return self.spoken_text_ids[seg.text]
        return self.spoken[seg.text]

    def length(self, segments: Sequence[tuple[Segment, bool]]) -> int:
        return sum(len(p) if isinstance(p, list) else p.shape[0] for p in (self.piece(s, sh) for s, sh in segments))

    def option_ids(self, item: MCItem) -> list[list[int]]:
        return [text_token_ids(self.system.tokenizer, o) for o in item.options]

    def context(self, segments: Sequence[tuple[Segment, bool]]) -> Tensor:
        """``(L, H)`` embeddings: runs of token ids embedded together, speech embeddings spliced in."""
        llm, parts, run = self.system.llm, [], []
        device = llm.gpt.embedding.word_embeddings.weight.device
        for seg, in_shot in segments:
            p = self.piece(seg, in_shot)
            if isinstance(p, list):
                run.extend(p)
                continue
            if run:
                parts.append(llm.embed(torch.tensor(run, device=device)[None])[0])
                run = []
            parts.append(p)
        if run:
            parts.append(llm.embed(torch.tensor(run, device=device)[None])[0])
        return torch.cat(parts) if parts else torch.zeros(0, llm.hidden_size, device=device)  # (L, H)


def _voice(bench: Benchmark, items: list[MCItem], candidates: dict[str, list[MCItem]], speech: SpokenSource,
           spoken_shots: bool, skipped: dict[str, int]) -> tuple[list[MCItem], dict[str, list[MCItem]], dict]:
    texts = {t for it in items for t in it.spoken_texts}
    if spoken_shots:
        texts |= {t for group in candidates.values() for s in group for t in s.spoken_texts}
    cuts = speech.cuts_for(f"{bench.name}-{bench.split}-{len(items)}", sorted(texts))
    keep = [it for it in items if all(t in cuts for t in it.spoken_texts)]
    if len(keep) < len(items):
        skipped["no_speech"] = len(items) - len(keep)
        log.warning("%s: %d items have no speech (synthesis failed) and are left out of every system",
                    bench.name, len(items) - len(keep))
    if spoken_shots:
        voiced = {g: [s for s in c if all(t in cuts for t in s.spoken_texts)] for g, c in candidates.items()}
        dropped = sum(len(c) for c in candidates.values()) - sum(len(c) for c in voiced.values())
        if dropped:
            log.warning("%s: %d shot candidates have no speech and are left out of every system's shots",
                        bench.name, dropped)
        candidates = voiced
    return keep, candidates, cuts


@torch.no_grad()
def evaluate_benchmark(bench: Benchmark, systems: Sequence[Any], settings: ScoringSettings | None = None,
                       speech: SpokenSource | None = None) -> BenchmarkResult:
    """Score every system on ``bench``.

    Args:
        bench (Benchmark): loaded items and shot pool.
        systems (Sequence[System]): see :mod:`nemo_salad.evaluation.systems` (names must be unique).
        settings (ScoringSettings | None): Default: ``ScoringSettings()``.
        speech (SpokenSource | None): voices the spoken texts; required when a system needs audio.

    Returns:
        BenchmarkResult

    Raises:
        ValueError: on duplicate system names, a missing speech source, or when no item is left to score.

    >>> res = evaluate_benchmark(load_benchmark("copa", n_items=20), [TextSystem(llm, tokenizer)])  # doctest: +SKIP
    >>> res.systems["text_llm"].acc_per_char, res.items[0]["systems"]["text_llm"]["pred"]  # doctest: +SKIP
    (0.65, {'sum': 1, 'per_token': 1, 'per_char': 1})
    >>> res.items[0]["systems"]["text_llm"]["n_shots"], res.systems["text_llm"].shots_mean  # doctest: +SKIP
    (5, 4.9)
    """
    settings = settings or ScoringSettings()
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    spoken_shots = settings.shots_modality == "speech"
    candidates = choose_shot_candidates(bench.shot_pool, settings.shot_limit, settings.seed)
    skipped, items, cuts = dict(bench.skipped), list(bench.items), {}
    if any(s.needs_audio for s in systems):
        if speech is None:
            raise ValueError(f"systems {[s.name for s in systems if s.needs_audio]} need audio: pass a SpokenSource")
        items, candidates, cuts = _voice(bench, items, candidates, speech, spoken_shots, skipped)
    renderers = [Renderer(s, spoken_shots) for s in systems]
    shot_texts = {t for group in candidates.values() for s in group for t in s.spoken_texts} if spoken_shots else set()
    for r in renderers:
        r.prepare(shot_texts, cuts)
    records: list[dict[str, Any]] = []
    left_out: dict[tuple[str, str], int] = {}  # (skip reason, system) -> items
    for start in range(0, len(items), settings.chunk_items):
        chunk = items[start:start + settings.chunk_items]
        texts = {t for it in chunk for t in it.spoken_texts} - shot_texts
        for r in renderers:
            r.prepare(texts, cuts)
        plans: list[tuple[MCItem, list[MCItem], list[int]]] = []
        for it in chunk:
            shots = shots_for(it, candidates, settings.shot_limit)
            ks = _shot_counts(it, shots, renderers, settings)
            if isinstance(ks, tuple):
                skipped[ks[0]] = skipped.get(ks[0], 0) + 1
                left_out[ks] = left_out.get(ks, 0) + 1
                continue
            plans.append((it, shots, ks))
        chunk_records = [_item_record(it, shots, ks) for it, shots, ks in plans]
        for j, r in enumerate(renderers):
            _score_system(r, [(it, shots[:ks[j]]) for it, shots, ks in plans], chunk_records, settings)
            r.forget(texts)
        records.extend(chunk_records)
    for (reason, name), n in sorted(left_out.items()):
        log.warning("%s: %d items left out of every system: %s", bench.name, n,
                    {"too_long": f"the zero-shot prompt exceeds max_tokens={settings.max_tokens} in {name}",
                     "too_long_for_shots": f"the {settings.shots}-shot prompt exceeds max_tokens="
                                           f"{settings.max_tokens} in {name}",
                     "too_few_shots": f"fewer than shots={settings.shots} shot candidates"}[reason])
    if not records:
        raise ValueError(f"benchmark {bench.name!r} ({bench.source}): no item left to score; skipped: {skipped}")
    return BenchmarkResult(bench.name, bench.title, bench.split, bench.source, bench.shot_source, bench.n_rows,
                           len(records), bench.chance, skipped,
                           {r.system.name: _summary(r, records, settings) for r in renderers}, records)


def _shot_counts(item: MCItem, shots: Sequence[MCItem], renderers: Sequence[Renderer],
                 settings: ScoringSettings) -> list[int] | tuple[str, str]:
    """Shots per system for ``item``, each within that system's own budget; or ``(reason, system)`` to leave
    the item out of every system (reason: a ``skipped`` key)."""
    if settings.shots is not None and len(shots) < settings.shots:
        return "too_few_shots", "any system"
    ks = []
    for r in renderers:
        base = r.length(prompt_segments(item, [])) + max(len(o) for o in r.option_ids(item))
        lens = [r.length([(seg, True) for seg in shot_segments(s)]) for s in shots]
        k = fit_shots(lens, base, settings.max_tokens)
        if k is None:
            return "too_long", r.system.name
        ks.append(k)
    if settings.shots is not None and min(ks) < settings.shots:
        return "too_long_for_shots", renderers[ks.index(min(ks))].system.name
    return ks


def _item_record(item: MCItem, shots: Sequence[MCItem], ks: Sequence[int]) -> dict[str, Any]:
    """The item's record; ``shot_ids`` are its shot candidates in order (a system with ``k`` shots used the first
    ``k``, its count is ``systems[name]["n_shots"]``); ``n_shots`` is the fewest shots of any system."""
    return {"id": item.id, "gold": item.gold, "n_shots": min(ks), "shot_ids": [s.id for s in shots[:max(ks)]],
            "spoken": list(item.spoken_texts), "options": list(item.options), "systems": {}}


def _score_system(r: Renderer, plans: list[tuple[MCItem, list[MCItem]]], records: list[dict[str, Any]],
                  settings: ScoringSettings) -> None:
    start = time.perf_counter()
    llm = r.system.llm
    reqs, where = [], []
    for n, (it, shots) in enumerate(plans):
        ctx = r.context(prompt_segments(it, shots))
        if ctx.shape[0] == 0:
            records[n]["systems"][r.system.name] = {"pred": {m: -1 for m in METRICS}, "correct": False,
                                                    "empty_context": True, "n_shots": len(shots)}
            continue
        reqs.append(ScoreRequest(ctx, r.option_ids(it)))
        where.append(n)
    was_training = llm.training
    llm.eval()
    try:
        device = llm.gpt.embedding.word_embeddings.weight.device
        batch_tokens = settings.batch_tokens or (16384 if device.type == "cuda" else 1)
        sums = score_shared_context(llm, reqs, batch_tokens, desc=f"scoring {r.system.name}")
    finally:
        llm.train(was_training)
    for n, req, lp in zip(where, reqs, sums, strict=True):
        it, shots = plans[n]
        scores = normalised_scores(lp, it.options, req.options)
        entry: dict[str, Any] = {"scores": {m: [s.get(m) for s in scores] for m in METRICS},
                                 "n_tokens": [s.n_tokens for s in scores], "n_shots": len(shots)}
        entry["pred"] = {m: max(range(len(scores)), key=lambda j, m=m: scores[j].get(m)) for m in METRICS}
        entry["correct"] = entry["pred"][settings.primary] == it.gold
        transcripts = getattr(r.system, "transcripts", None)
        if transcripts is not None:
            entry["transcripts"] = [transcripts.get(t, "") for t in it.spoken_texts]
        records[n]["systems"][r.system.name] = entry
    r.seconds += time.perf_counter() - start


def _summary(r: Renderer, records: list[dict[str, Any]], settings: ScoringSettings) -> SystemScores:
    name, golds = r.system.name, [rec["gold"] for rec in records]
    acc = {m: accuracy([rec["systems"][name]["pred"][m] for rec in records], golds) for m in METRICS}
    empty = sum(1 for rec in records if rec["systems"][name].get("empty_context"))
    shots = [rec["systems"][name]["n_shots"] for rec in records]
    return SystemScores(name, r.system.role, len(records), acc["sum"], acc["per_token"], acc["per_char"],
                        acc[settings.primary], r.seconds, len(records) / max(r.seconds, 1e-9), empty,
                        sum(shots) / len(shots), min(shots), max(shots))


def evaluate(benchmarks: Sequence[Benchmark], systems: Sequence[Any], settings: ScoringSettings | None = None,
             speech: SpokenSource | None = None) -> EvalResults:
    """Score every system on every benchmark.

    >>> results = evaluate([load_benchmark("copa", n_items=20)], standard_systems(llm, tokenizer))  # doctest: +SKIP
    """
    settings = settings or ScoringSettings()
    results = []
    for bench in benchmarks:
        results.append(evaluate_benchmark(bench, systems, settings, speech))
        log.info("%s: %s", bench.name, {n: f"{s.primary:.4f} ({s.shots_mean:.2f} shots/item)"
                                         for n, s in results[-1].systems.items()})
    meta = [{"name": s.name, "role": s.role, "label": ROLE_LABELS.get(s.role, s.role)} for s in systems]
    return EvalResults(results, meta, asdict(settings))
