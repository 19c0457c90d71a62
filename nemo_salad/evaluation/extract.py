"""Rule-based extraction of the chosen option from a free-form answer, with a seeded random fallback.

The protocol follows VoiceBench's multiple-choice evaluator (the MCQ evaluator of the VoiceBench repository,
used for its OpenBookQA and MMSU numbers and by Ultravox, Kimi-Audio and Phi-4-multimodal reports): the model
*generates* an answer, a list of hand-written rules looks for an option letter in it, and when no rule finds one
a random letter is drawn and the item is counted as an extraction *failure* (the reported fail rate). The rules
below are a compact re-statement of that rule family, not a copy of its template list.

**Normalisation** (:func:`normalise_response`): Unicode NFKC (full-width ``（Ｂ）`` becomes ``(B)``); a leading
``<1>`` / ``<2>`` / ``<3>`` marker is dropped (as VoiceBench does); markdown emphasis and code marks (``*``,
`````), LaTeX math delimiters and wrappers (``$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\boxed{``,
``\\text{``, ``\\textbf{``, ``\\mathbf{``, ``{``, ``}``) are removed; whitespace runs (newlines included) become
one space; the ends are stripped. Letter case is kept for the article guard below; every rule matches
case-insensitively (``b`` and ``B`` are the same label).

**A label** is one of ``labels`` (``A``, ``B``, ... by default) standing alone: no letter or digit right before
or after it. Article guard: a lower-case ``a`` or ``i`` followed by a space and a letter is the English word
("the answer is a bird", "i think"), not a label; at the very start of the response the guard holds for upper
case too ("A bird ...", "I think ...").

**Rules**, tried in order; the first rule that finds any label decides. When it finds exactly one distinct label
that label is the answer; when it finds several the item fails as ``ambiguous_<rule>`` (VoiceBench instead takes
the first listed letter of its first matching template):

1. ``answer_is`` — a statement of the answer: ``answer|choice|option [to/for/of ...] is|would be|should be|will
   be|must be|:|=`` then optionally ``option|choice|letter`` and an opening ``( [ " '``, then the label ("The
   answer is (B)", "Answer: B", "the correct option would be C"); or ``select|choose|pick|go with [option]
   <label>``; or ``<label> is the correct|right|best ...`` ("B is the correct answer").
2. ``paren`` — a label in brackets: ``(B)``, ``[B]``.
3. ``letter_punct`` — a label after the start, a space, a quote or ``(``, followed by ``. ) : ,`` that is not
   itself followed by a letter or digit ("I pick B.", "B) Paris"; not "e.g." nor "1.5").
4. ``start`` — the response begins with a label (optionally after ``( [ " '``) followed by its end, a space or
   punctuation that is not itself followed by a letter or digit ("B", "B Paris"; not "1.5").
5. ``option_text`` — the (whitespace-normalised, case-folded, end-punctuation-stripped) text of exactly one option
   occurs in the response as whole words. An option whose text lies inside a longer matching option's text is
   dropped first ("cat food" beats "cat"). VoiceBench has no such rule.

Failures: ``empty`` (nothing generated), ``none`` (no rule found a label), ``ambiguous_<rule>``. A failed item is
scored with :func:`fallback_choice`, a uniform random option drawn from a generator seeded by ``(seed, item id)``
— reproducible and independent of the order of items and of which systems run (VoiceBench draws from the
unseeded global generator among A–D).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence

__all__ = ["FAIL_RULES", "RULES", "extract_choice", "fallback_choice", "normalise_response", "option_labels"]

#: the extraction rules, in the order they are tried
RULES = ("answer_is", "paren", "letter_punct", "start", "option_text")
#: what ``rule`` says when no answer was extracted (``ambiguous_<rule>`` for each rule as well)
FAIL_RULES = ("empty", "none", *(f"ambiguous_{r}" for r in RULES))

_LATEX = re.compile(r"\\(?:boxed|text|textbf|mathbf|mathrm)\s*\{|\\[()\[\]]|[${}*`]")
_MARKER = re.compile(r"^\s*<[123]>")
_END_PUNCT = ".!?,;:"


def option_labels(n: int) -> list[str]:
    """The letters ``A, B, ...`` of ``n`` options.

    Raises:
        ValueError: for ``n`` outside ``1..26``.

    >>> option_labels(4)
    ['A', 'B', 'C', 'D']
    """
    if not 1 <= n <= 26:
        raise ValueError(f"need 1..26 options to label them A..Z, got {n}")
    return [chr(ord("A") + j) for j in range(n)]


def normalise_response(text: str) -> str:
    """The response as the rules read it (see the module docstring); case is kept.

    >>> normalise_response("<1> The answer is: **\\\\boxed{B}**\\n\\n(Paris)")
    'The answer is: B (Paris)'
    """
    text = unicodedata.normalize("NFKC", text)
    text = _MARKER.sub("", text)
    text = _LATEX.sub("", text)
    return " ".join(text.split())


def _is_word(text: str, start: int, end: int) -> bool:
    """The article guard: the label at ``text[start:end]`` is the English "a"/"i" followed by a word."""
    token = text[start:end]
    if token.lower() not in ("a", "i") or not re.match(r" [A-Za-z]", text[end:end + 2]):
        return False
    return token.islower() or start == len(text) - len(text.lstrip("(\"'[ "))


def _patterns(labels: Sequence[str]) -> dict[str, list[re.Pattern]]:
    lab = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    label = rf"(?<![A-Za-z0-9])(?P<label>{lab})(?![A-Za-z0-9])"
    bare = rf"(?<![A-Za-z0-9])(?:{lab})(?![A-Za-z0-9])"
    opener = r"[(\[\"']?\s*"
    flags = re.IGNORECASE
    return {
        "answer_is": [
            re.compile(rf"\b(?:answer|choice|option)s?\b(?:\s+(?:to|for|of)\b[^.?!]{{0,60}}?)?\s*"
                       rf"(?:(?:is|would be|should be|will be|must be)\s*:?|:|=)\s*(?:option\s+|choice\s+|letter\s+)?"
                       rf"{opener}{label}", flags),
            re.compile(rf"\b(?:select|choose|pick|go with)\s+(?:option\s+|choice\s+)?{opener}{label}", flags),
            re.compile(rf"{label}[)\]\"']?\s+is\s+(?:the\s+)?(?:correct|right|best)\b", flags),
        ],
        "paren": [re.compile(rf"\(\s*{bare}\s*\)|\[\s*{bare}\s*\]", flags)],
        "letter_punct": [re.compile(rf"(?:^|(?<=[\s\"'(])){label}(?=[.):,](?![A-Za-z0-9]))", flags)],
        "start": [re.compile(rf"^[(\[\"']?{label}(?=$|\s|[.,:;)\]!?\"'-](?![A-Za-z0-9]))", flags)],
    }


def _found(rule: str, pattern: re.Pattern, text: str) -> list[tuple[str, int, int]]:
    """``(label, start, end)`` of every label the pattern finds (paren: the whole bracket group's label)."""
    out = []
    for m in pattern.finditer(text):
        if rule == "paren":
            inner = m.group(0).strip("()[] ")
            start = m.start() + m.group(0).index(inner)
            out.append((inner, start, start + len(inner)))
        else:
            out.append((m.group("label"), m.start("label"), m.end("label")))
    return out


def _clean_option(option: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", option).split()).strip(_END_PUNCT + " ").lower()


def _option_text(text: str, options: Sequence[str]) -> set[int]:
    low = text.lower()
    cleaned = [_clean_option(o) for o in options]
    hits = {j for j, c in enumerate(cleaned) if c and re.search(rf"(?<!\w){re.escape(c)}(?!\w)", low)}
    return {j for j in hits if not any(cleaned[j] != cleaned[k] and cleaned[j] in cleaned[k] for k in hits)}


def extract_choice(response: str, options: Sequence[str], labels: Sequence[str] | None = None
                   ) -> tuple[int | None, str]:
    """The option a free-form answer chooses, and the rule that decided (see the module docstring).

    Args:
        response (str): the generated answer.
        options (Sequence[str]): the option texts, in label order.
        labels (Sequence[str] | None): the label of each option, unique ignoring case. Default:
            :func:`option_labels` (``A, B, ...``).

    Returns:
        tuple[int | None, str]: the option index (None on failure) and the rule (one of ``RULES`` on success,
        of ``FAIL_RULES`` on failure).

    Raises:
        ValueError: if ``labels`` and ``options`` differ in length or labels repeat (ignoring case).

    >>> extract_choice("The answer is (B).", ["Paris", "London"])
    (1, 'answer_is')
    >>> extract_choice("A) Paris B) London", ["Paris", "London"])
    (None, 'ambiguous_letter_punct')
    """
    labels = option_labels(len(options)) if labels is None else list(labels)
    if len(labels) != len(options) or len({x.lower() for x in labels}) != len(labels):
        raise ValueError(f"need one distinct label per option (ignoring case); got labels {labels} for "
                         f"{len(options)} options")
    text = normalise_response(response)
    if not text:
        return None, "empty"
    index = {x.lower(): j for j, x in enumerate(labels)}
    for rule, patterns in _patterns(labels).items():
        chosen = {index[lab.lower()] for p in patterns for lab, s, e in _found(rule, p, text)
                  if not _is_word(text, s, e)}
        if len(chosen) == 1:
            return chosen.pop(), rule
        if chosen:
            return None, f"ambiguous_{rule}"
    hits = _option_text(text, options)
    if len(hits) == 1:
        return hits.pop(), "option_text"
    return None, ("ambiguous_option_text" if hits else "none")


def fallback_choice(n_options: int, seed: int, key: str) -> int:
    """The seeded random option of a failed extraction: uniform over ``n_options``, fixed by ``(seed, key)``.

    >>> fallback_choice(4, 0, "item-1") == fallback_choice(4, 0, "item-1")
    True
    """
    if n_options < 1:
        raise ValueError(f"need at least one option, got {n_options}")
    return random.Random(f"{seed}/{key}").randrange(n_options)
