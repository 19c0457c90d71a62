"""Validation of the texts handed to a TTS engine: what can be spoken, and a stable reason when it cannot.

A text is accepted when it is valid UTF-8, has at least one letter or digit after normalisation and is at
most ``max_chars`` characters long. Normalisation is Unicode NFC, control and format characters (zero-width
spaces, BOMs, ...) removed and every run of whitespace collapsed to one space. Long texts are *not* split:
they are rejected with ``too_long`` so that a transcript always matches its audio one to one.

The reason strings are stable keys of :attr:`SynthesisReport.n_skipped
<nemo_salad.synthesis.writer.SynthesisReport>`.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["EMPTY", "INVALID_UTF8", "PUNCTUATION_ONLY", "SKIP_REASONS", "TOO_LONG", "decode_text", "validate_text"]

EMPTY = "empty_text"
PUNCTUATION_ONLY = "punctuation_only"
TOO_LONG = "too_long"
INVALID_UTF8 = "invalid_utf8"
SKIP_REASONS = (EMPTY, PUNCTUATION_ONLY, TOO_LONG, INVALID_UTF8)

_WHITESPACE = re.compile(r"\s+")


def decode_text(raw: str | bytes) -> str:
    """Turn raw input into ``str`` without losing the evidence of bad bytes.

    Bytes are decoded as UTF-8 with ``surrogateescape``: invalid bytes become lone surrogates, which
    :func:`validate_text` then rejects as ``invalid_utf8`` (instead of a crash while reading the input).

    Args:
        raw (str | bytes): text as read from a file or given by a caller.

    Returns:
        str: the decoded text (unchanged if it was already ``str``).

    >>> decode_text(b"caf\\xc3\\xa9"), validate_text(decode_text(b"caf\\xe9"))
    ('café', (None, 'invalid_utf8'))
    """
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="surrogateescape")
    return raw


def validate_text(raw: str | bytes | None, max_chars: int = 600) -> tuple[str | None, str | None]:
    """Normalise a text for synthesis or say why it cannot be synthesized.

    Args:
        raw (str | bytes | None): the text. Bytes are decoded strictly as UTF-8.
        max_chars (int): longest accepted text, counted after normalisation. Default: 600.

    Returns:
        tuple[str | None, str | None]: ``(text, None)`` when accepted, else ``(None, reason)`` with reason one of
        ``empty_text``, ``punctuation_only``, ``too_long``, ``invalid_utf8``.

    Raises:
        TypeError: if ``raw`` is neither ``str``, ``bytes`` nor ``None``.

    >>> validate_text("  Hello,\\n\\tworld!  ")
    ('Hello, world!', None)
    >>> validate_text("?!..."), validate_text(""), validate_text("a" * 10, max_chars=5)
    ((None, 'punctuation_only'), (None, 'empty_text'), (None, 'too_long'))
    """
    if raw is None:
        return None, EMPTY
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, INVALID_UTF8
    if not isinstance(raw, str):
        raise TypeError(f"text must be str or bytes, got {type(raw).__name__}: {raw!r:.80}")
    try:
        raw.encode("utf-8")  # lone surrogates (from surrogateescape or JSON "\udcxx") are not UTF-8
    except UnicodeEncodeError:
        return None, INVALID_UTF8
    text = unicodedata.normalize("NFC", raw)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")
    text = _WHITESPACE.sub(" ", text).strip()
    if not text:
        return None, EMPTY
    if not any(ch.isalnum() for ch in text):
        return None, PUNCTUATION_ONLY
    if len(text) > max_chars:
        return None, TOO_LONG
    return text, None
