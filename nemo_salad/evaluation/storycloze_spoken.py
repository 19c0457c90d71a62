"""Spoken StoryCloze (sSC / tSC) scored as slamkit scores it: the version with the higher mean log-likelihood wins.

**The metric** (slamkit, ``slp-rl/slamkit``: its ``modelling_metric`` StoryCloze evaluation with ``mean_nll`` on,
and ``calc_nll``): each version of a story is scored by the mean, over the positions the model predicts, of
``log p(token_t | tokens_<t)`` — every token after the first, padding excluded, i.e. minus the per-token mean
NLL; a pair counts 1 when the correct version scores higher, 0.5 when the two are equal, 0 when lower, and the
accuracy is the mean over pairs. Pairs are scored zero-shot (no few-shot examples), as there.

**Two modes** (``mode``):

* ``"continuation"`` — speech prompt, text continuation (SALAD's setting: speech in, text out). The four-sentence
  context is heard (its speech embeddings; the text systems read its text, the cascade its transcript) and the
  two endings are text continuations `` <ending>``; each version scores the mean log-probability of its ending
  tokens given the context — the per-token normalised option score of the log-likelihood harness, computed
  with the same shared-context scorer (:func:`~nemo_salad.evaluation.scoring.score_shared_context`). slamkit's
  cross-modal StoryCloze also includes the prompt's positions in the mean; a speech-in / text-out model has no
  likelihood for its speech prompt, so here only the ending is scored (the two versions share the context, so
  this changes the normalisation, not what is compared).
* ``"full_story"`` — all speech, each whole story heard (sSC / tSC as released). slamkit scores a speech LM by
  the likelihood of the speech tokens of the whole story. Our speech model maps speech into LLM input
  embeddings and predicts *text* tokens only: it defines no likelihood of speech. The obvious substitute,
  the likelihood of the story's transcript given its own audio, measures recognition (the transcript is
  in the input), not which story is coherent. So this mode scores slamkit's text-LM version — the mean NLL of
  the whole story's text tokens — for the text systems (topline, speech model's LLM on text) and the cascade
  (the ASR transcript of each story's audio), and reports the speech model's row as not applicable
  (:data:`NOT_APPLICABLE`, accuracy None) instead of inventing a number.

Data and its sources (official StoryCloze CSV, manifests with recordings) are in
:mod:`nemo_salad.evaluation.storycloze_pairs`; recordings, when present, replace synthesis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from nemo_salad.evaluation.prompts import text_token_ids
from nemo_salad.evaluation.recorded import RecordedSpeech
from nemo_salad.evaluation.scoring import ScoreRequest, score_shared_context
from nemo_salad.evaluation.spoken import SpokenSource
from nemo_salad.evaluation.storycloze_pairs import (
    KINDS,
    MODES,
    StoryClozeSet,
    StoryPair,
    load_spoken_storycloze,
    read_pair_manifest,
    storycloze_pairs,
)

__all__ = ["KINDS", "MODES", "NOT_APPLICABLE", "StoryClozeResult", "StoryClozeSet", "StoryPair", "SystemStoryScores",
           "evaluate_story_cloze", "load_spoken_storycloze", "pair_outcome", "read_pair_manifest",
           "storycloze_pairs"]

log = logging.getLogger(__name__)

NOT_APPLICABLE = ("not applicable: the speech model predicts text tokens only and defines no likelihood of the "
                  "spoken story (see storycloze_spoken's module docstring)")


def pair_outcome(correct: float, incorrect: float) -> float:
    """slamkit's pair score: 1 if the correct version's mean log-likelihood is higher, 0.5 on a tie, else 0.

    >>> pair_outcome(-2.0, -3.0), pair_outcome(-2.5, -2.5), pair_outcome(-4.0, -3.0)
    (1.0, 0.5, 0.0)
    """
    return 1.0 if correct > incorrect else 0.5 if correct == incorrect else 0.0


@dataclass
class SystemStoryScores:
    """One system's result.

    Attributes:
        name (str): result key. role (str): the system's role (topline, speech, ...).
        applicable (bool): False for the speech model in "full_story" mode (``note`` says why).
        accuracy (float | None): mean pair score (ties 0.5); None when not applicable.
        n_pairs (int): pairs scored. n_ties (int): pairs whose two versions scored exactly equal.
        note (str): why the row is not applicable. Default: "".
    """

    name: str
    role: str
    applicable: bool
    accuracy: float | None
    n_pairs: int
    n_ties: int
    note: str = ""


@dataclass
class StoryClozeResult:
    """Every system on one spoken StoryCloze set.

    Attributes:
        name (str): "sSC" / "tSC" / the manifest's name. mode (str): a key of :data:`MODES`.
        source (str): the data file. n_pairs (int): pairs scored.
        skipped (dict[str, int]): pairs / rows left out per reason (bad rows, ``no_speech``).
        systems (dict[str, SystemStoryScores]): per system.
        records (list[dict]): per pair: ``id``, texts, and per applicable system ``mean_loglik``
            ``[correct, incorrect]`` (mean log-probability per scored token), ``sum``, ``n_tokens``, ``outcome``.
    """

    name: str
    mode: str
    source: str
    n_pairs: int
    skipped: dict[str, int]
    systems: dict[str, SystemStoryScores]
    records: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _embed(llm: Any, x: list[int] | Tensor) -> Tensor:
    """``(L, H)`` input embeddings of token ids, or speech embeddings as they are."""
    if isinstance(x, Tensor):
        return x
    device = llm.gpt.embedding.word_embeddings.weight.device
    return llm.embed(torch.tensor(x, dtype=torch.long, device=device)[None])[0]


def _versions(system: Any, pair: StoryPair, mode: str, inputs: dict[str, Any]
              ) -> tuple[list[ScoreRequest], list[tuple[int, int]]]:
    """The requests of one pair for one system, and for (correct, incorrect) the (request, option) that scores
    it; identical versions are scored once, so that they tie exactly."""
    if mode == "continuation":
        ctx = _embed(system.llm, inputs[pair.context])
        endings = list(dict.fromkeys([pair.correct_ending, pair.incorrect_ending]))
        options = [text_token_ids(system.tokenizer, " " + e) for e in endings]
        where = [(0, endings.index(pair.correct_ending)), (0, endings.index(pair.incorrect_ending))]
        return [ScoreRequest(ctx, options)], where
    reqs, seen, where = [], {}, []
    for story in (pair.correct_story, pair.incorrect_story):
        ids = list(inputs[story])
        if len(ids) < 2:
            raise ValueError(f"pair {pair.id!r}: {system.name} gives {len(ids)} token(s) for the story "
                             f"{story[:60]!r}; a whole-story likelihood needs at least 2")
        key = tuple(ids)
        if key not in seen:
            seen[key] = len(reqs)
            reqs.append(ScoreRequest(_embed(system.llm, ids[:1]), [ids[1:]]))
        where.append((seen[key], 0))
    return reqs, where


@torch.no_grad()
def _score_chunk(system: Any, pairs: Sequence[StoryPair], mode: str, cuts: dict[str, Any],
                 batch_tokens: int | None) -> list[dict[str, Any]]:
    texts = list(dict.fromkeys(t for p in pairs for t in p.spoken_texts(mode)))
    inputs = system.spoken_inputs(texts, cuts)
    reqs: list[ScoreRequest] = []
    layout = []
    for pair in pairs:
        pair_reqs, where = _versions(system, pair, mode, inputs)
        layout.append([(len(reqs) + r, o) for r, o in where])
        reqs.extend(pair_reqs)
    llm = system.llm
    was_training = llm.training
    llm.eval()
    try:
        device = llm.gpt.embedding.word_embeddings.weight.device
        sums = score_shared_context(llm, reqs, batch_tokens or (16384 if device.type == "cuda" else 1))
    finally:
        llm.train(was_training)
    out = []
    for pair, where in zip(pairs, layout, strict=True):
        total = [sums[r][o] for r, o in where]
        n_tok = [len(reqs[r].options[o]) for r, o in where]
        mean = [s / n for s, n in zip(total, n_tok, strict=True)]
        entry: dict[str, Any] = {"mean_loglik": mean, "sum": total, "n_tokens": n_tok,
                                 "outcome": pair_outcome(mean[0], mean[1])}
        transcripts = getattr(system, "transcripts", None)
        if transcripts is not None:
            entry["transcripts"] = [transcripts.get(t, "") for t in pair.spoken_texts(mode)]
        out.append(entry)
    return out


def _voice(data: StoryClozeSet, mode: str, speech: SpokenSource | None, skipped: dict[str, int]
           ) -> tuple[list[StoryPair], dict[str, Any]]:
    recordings = {t: a for p in data.pairs for t, a in p.recordings(mode).items()}
    texts = sorted({t for p in data.pairs for t in p.spoken_texts(mode)})
    unrecorded = [t for t in texts if t not in recordings]
    if speech is None and unrecorded:
        raise ValueError(f"{data.name} ({data.source}): systems that hear speech need a SpokenSource for the "
                         f"{len(unrecorded)} of {len(texts)} {mode} texts without a recording (e.g. "
                         f"{unrecorded[0][:60]!r}); pass speech=SynthesizedSpeech(...)")
    source = speech if speech is not None and not recordings else RecordedSpeech(recordings, fallback=speech)
    cuts = source.cuts_for(f"storycloze-{data.name}-{mode}-{len(data.pairs)}", texts)
    keep = [p for p in data.pairs if all(t in cuts for t in p.spoken_texts(mode))]
    if len(keep) < len(data.pairs):
        skipped["no_speech"] = len(data.pairs) - len(keep)
        log.warning("%s: %d pairs have no speech (synthesis failed) and are left out of every system", data.name,
                    len(data.pairs) - len(keep))
    return keep, cuts


def evaluate_story_cloze(data: StoryClozeSet, systems: Sequence[Any], mode: str = "continuation",
                         speech: SpokenSource | None = None, batch_tokens: int | None = None,
                         chunk_pairs: int = 256) -> StoryClozeResult:
    """Score every system on every pair of ``data`` (metric and modes in the module docstring).

    Args:
        data (StoryClozeSet): pairs, e.g. from :func:`load_spoken_storycloze`.
        systems (Sequence[System]): those of :mod:`nemo_salad.evaluation.systems` (unique names).
        mode (str): "continuation" (spoken context, text endings) or "full_story". Default: "continuation".
        speech (SpokenSource | None): voices the texts without a recording; needed when a system hears speech
            and the data has no recordings. Default: None.
        batch_tokens (int | None): positions per scoring forward; None: one request per forward on CPU, 16384 on
            GPU. Default: None.
        chunk_pairs (int): pairs rendered at once (bounds the memory of speech embeddings). Default: 256.

    Returns:
        StoryClozeResult

    Raises:
        ValueError: for an unknown mode, duplicate system names, ``chunk_pairs < 1``, a missing speech source, or
            no pair left.

    >>> res = evaluate_story_cloze(load_spoken_storycloze("cloze.csv", "tSC"), [TextSystem(llm, tok)])  # doctest: +SKIP
    >>> res.systems["text_llm"].accuracy  # doctest: +SKIP
    0.97
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    applicable = [s for s in systems if not (mode == "full_story" and s.role == "speech")]
    skipped, pairs, cuts = dict(data.skipped), list(data.pairs), {}
    if any(s.needs_audio for s in applicable):
        pairs, cuts = _voice(data, mode, speech, skipped)
    if not pairs:
        raise ValueError(f"{data.name} ({data.source}): no pair left to score; skipped: {skipped}")
    records: list[dict[str, Any]] = [
        {"id": p.id, "context": p.context, "correct_ending": p.correct_ending,
         "incorrect_ending": p.incorrect_ending, "systems": {}} for p in pairs]
    scores: dict[str, SystemStoryScores] = {}
    for system in systems:
        if system not in applicable:
            scores[system.name] = SystemStoryScores(system.name, system.role, False, None, 0, 0, NOT_APPLICABLE)
            continue
        entries = [e for s in range(0, len(pairs), chunk_pairs)
                   for e in _score_chunk(system, pairs[s:s + chunk_pairs], mode, cuts, batch_tokens)]
        for rec, entry in zip(records, entries, strict=True):
            rec["systems"][system.name] = entry
        outcomes = [e["outcome"] for e in entries]
        scores[system.name] = SystemStoryScores(system.name, system.role, True, sum(outcomes) / len(outcomes),
                                                len(outcomes), outcomes.count(0.5))
    log.info("%s (%s): %s", data.name, mode, {n: s.accuracy for n, s in scores.items()})
    return StoryClozeResult(data.name, mode, data.source, len(pairs), skipped, scores, records)
