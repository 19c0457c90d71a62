"""Text validation and text-item reading: every bad input gets a stable reason or a clear error."""

from __future__ import annotations

import gzip
import json

import pytest

from nemo_salad.synthesis import read_text_items, text_cuts, validate_text
from nemo_salad.synthesis.cuts import cut_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello world.", ("Hello world.", None)),
        ("  two\t\nlines \u00a0 here ", ("two lines here", None)),  # any whitespace run -> one space
        ("zero\u200bwidth\ufeff", ("zerowidth", None)),  # format characters removed
        ("cafe\u0301", ("caf\u00e9", None)),  # NFC
        ("\u00bfQu\u00e9?", ("\u00bfQu\u00e9?", None)),
        ("42", ("42", None)),
        ("caf\u00e9".encode("utf-8"), ("caf\u00e9", None)),
        ("", (None, "empty_text")),
        ("   \n\t ", (None, "empty_text")),
        (None, (None, "empty_text")),
        ("\x00\x07", (None, "empty_text")),
        ("?!... -- ;;", (None, "punctuation_only")),
        ("\u2014 \u2026 \u00bf?", (None, "punctuation_only")),
        (b"caf\xe9", (None, "invalid_utf8")),
        (b"\xff\xfe", (None, "invalid_utf8")),
        ("bad \udce9 byte", (None, "invalid_utf8")),
    ],
)
def test_validate_text(raw, expected):
    assert validate_text(raw) == expected


def test_too_long_counts_normalised_characters():
    assert validate_text("a" * 600) == ("a" * 600, None)
    assert validate_text("a" * 601) == (None, "too_long")
    assert validate_text("a " + " " * 1000 + "b", max_chars=3) == ("a b", None)  # whitespace collapsed first


def test_validate_text_rejects_non_text_type():
    with pytest.raises(TypeError, match="int"):
        validate_text(3)  # type: ignore[arg-type]


def test_read_text_items_keeps_invalid_bytes_visible(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_bytes(b'{"id": "ok", "text": "Fine."}\n\n{"id": "bad", "text": "caf\xe9"}\n'
                     b'{"id": "esc", "text": "x \\udce9"}\n')
    items = list(read_text_items(path))
    assert [i["id"] for i in items] == ["ok", "bad", "esc"]
    assert [validate_text(i["text"])[1] for i in items] == [None, "invalid_utf8", "invalid_utf8"]


def test_read_text_items_gz_and_errors(tmp_path):
    gz = tmp_path / "t.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"id": "a", "text": "Hi.", "cluster": 2}) + "\n")
    assert list(read_text_items(gz)) == [{"id": "a", "text": "Hi.", "cluster": 2}]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": "a", "text": "Hi."}\n{"id": "b", \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        list(read_text_items(bad_json))
    no_text = tmp_path / "nt.jsonl"
    no_text.write_text('{"id": "a", "txt": "Hi."}\n')
    with pytest.raises(ValueError, match=r"nt.jsonl:1 needs keys 'id' and 'text', found \['id', 'txt'\]"):
        list(read_text_items(no_text))


def test_text_cuts_fields_and_errors():
    cuts = text_cuts([("a", "One."), {"id": "b", "text": b"Two.", "source_id": "q7", "cluster": 1}], source="arc")
    a, b = list(cuts)
    assert (a.id, cut_text(a), a.custom) == ("a", "One.", {"source_id": "a", "source": "arc"})
    assert (b.id, cut_text(b), b.custom) == ("b", "Two.", {"source_id": "q7", "source": "arc", "cluster": 1})
    assert a.recording is None and a.supervisions[0].text == "One."
    with pytest.raises(ValueError, match="lacks \\['text'\\]"):
        text_cuts([{"id": "x"}])
    with pytest.raises(ValueError, match="ids must be non-empty strings"):
        text_cuts([("", "text")])
    with pytest.raises(ValueError, match="text of type int"):
        text_cuts([("x", 5)])
