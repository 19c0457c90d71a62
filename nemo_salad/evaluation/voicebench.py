"""MMSU as VoiceBench ships it: recorded (TTS) questions, options parsed from the prompt text, one split per domain.

VoiceBench (Chen et al. 2024, Hugging Face dataset ``hlt-lab/voicebench``, config ``mmsu``) has 12 domain splits
(:data:`MMSU_DOMAINS`); each row holds ``audio`` (the question *and* its options read aloud), ``prompt`` (the
same text) and ``reference`` (the gold letter), plus ids (``question_id`` when present). A local copy is read
offline in any of these layouts (:func:`read_mmsu`):

* a ``datasets.DatasetDict.save_to_disk`` directory (``dataset_dict.json``), one split per domain (a saved
  single ``Dataset`` is one domain named after its directory);
* parquet files as downloaded from the hub: ``[mmsu/]<domain>-00000-of-00001.parquet`` (or ``<domain>/*.parquet``);
* JSONL: ``<domain>.jsonl`` files in a directory (or one ``.jsonl`` whose rows carry ``domain``), each row with
  ``prompt``, ``reference`` and ``audio`` — a wav path relative to the JSONL file.

Audio is never decoded by ``datasets`` (read with ``Audio(decode=False)``, no ``torchcodec`` needed):
:class:`~nemo_salad.evaluation.recorded.RecordedSpeech` turns the encoded bytes of the texts being voiced into
16 kHz cuts, so the speech systems hear the benchmark's recording, not a re-synthesis. A ``save_to_disk`` copy is
memory-mapped and its audio read row by row when voiced; parquet files are read whole into memory (about their
size on disk: pass ``domains`` to read fewer).

Prompt parsing (:func:`parse_mc_prompt`): option labels are ``A.``, ``A)``, ``A:`` or ``(A)`` preceded by
whitespace or the start of the text and followed by whitespace; they must run ``A, B, C, ...`` in order (up to
``J``). Of the possible label chains the longest wins, ties going to the one that starts last (a stray
"vitamin A." in the question does not start the options). The question is the text before ``A``; each option
runs to the next label. When every label starts a line, an option ends at its line break and lines after the
last option (an instruction) are dropped; otherwise the last option runs to the end. A row whose prompt yields
fewer than two labelled options or no question is skipped and counted as ``unparsed_prompt``; a row without
audio as ``no_audio`` (both logged per domain, as :class:`~nemo_salad.evaluation.items.SkipCounter` does).

Items follow the repository's MMSU / MMLU layout: the MMLU subject header with the domain, then
``Question: <prompt>\\nAnswer:`` + `` <option text>`` (``answer_format="option"``, cloze) or `` <letter>``
(``"letter"``). The spoken segment is the whole prompt — exactly what the audio says — so every text condition
reads the text the speech condition hears. Without a local copy, :func:`load_mmsu` falls back to the offline
``mmlu`` stand-in (its speech is synthesized by the caller's source).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_salad.evaluation.items import MCItem, Segment, SkipCounter, SkipItem, make_item, select_items
from nemo_salad.evaluation.loaders import Benchmark, iter_jsonl, load_benchmark
from nemo_salad.evaluation.recorded import Audio, AudioRef, RecordedSpeech

__all__ = ["MMSU_DOMAINS", "DomainRows", "MMSULoad", "ParsedPrompt", "load_mmsu", "mmsu_item", "parse_mc_prompt",
           "read_mmsu"]

log = logging.getLogger(__name__)

MMSU_DOMAINS = ("biology", "business", "chemistry", "economics", "engineering", "health", "history", "law", "other",
                "philosophy", "physics", "psychology")
_LABELS = "ABCDEFGHIJ"
_MARK = re.compile(r"(?<!\S)(?:\(([A-J])\)|([A-J])[.):])(?=\s)")
_PARQUET_NAME = re.compile(r"^(?P<domain>.+?)-\d+-of-\d+$")


@dataclass(frozen=True)
class ParsedPrompt:
    """A multiple-choice prompt split into its question, option labels and option texts."""

    question: str
    labels: tuple[str, ...]
    options: tuple[str, ...]


def _chains(marks: list[re.Match]) -> list[list[re.Match]]:
    chains = []
    for i, m in enumerate(marks):
        if (m.group(1) or m.group(2)) != "A":
            continue
        chain, want = [m], 1
        for n in marks[i + 1:]:
            if want < len(_LABELS) and (n.group(1) or n.group(2)) == _LABELS[want]:
                chain.append(n)
                want += 1
        chains.append(chain)
    return chains


def parse_mc_prompt(prompt: str) -> ParsedPrompt:
    """Split a VoiceBench-style prompt into question and labelled options (rules in the module docstring).

    Args:
        prompt (str): question followed by options labelled ``A.`` / ``A)`` / ``A:`` / ``(A)``.

    Returns:
        ParsedPrompt

    Raises:
        SkipItem: ``unparsed_prompt`` when fewer than two options or no question are found.

    >>> p = parse_mc_prompt("How much is vitamin A. needed? A. a lot B. none\\nC. some")
    >>> p.question, p.labels, p.options
    ('How much is vitamin A. needed?', ('A', 'B', 'C'), ('a lot', 'none', 'some'))
    >>> parse_mc_prompt("Which organ pumps blood?\\nA) heart\\nB) lung\\nAnswer with the letter.").options
    ('heart', 'lung')
    """
    marks = list(_MARK.finditer(prompt))
    chains = _chains(marks)
    if not chains:
        raise SkipItem("unparsed_prompt", f"no option labels 'A. ... B. ...' in {prompt[:80]!r}")
    chain = max(chains, key=lambda c: (len(c), c[0].start()))
    question = prompt[:chain[0].start()].strip()
    if len(chain) < 2 or not question:
        raise SkipItem("unparsed_prompt", f"{len(chain)} labelled options, question {question[:40]!r} in "
                                          f"{prompt[:80]!r}")
    line_layout = all(m.start() == 0 or prompt[m.start() - 1] == "\n" for m in chain)
    options = []
    for k, m in enumerate(chain):
        end = chain[k + 1].start() if k + 1 < len(chain) else len(prompt)
        text = prompt[m.end():end]
        if line_layout:
            text = text.split("\n", 1)[0]
        options.append(" ".join(text.split()))
    return ParsedPrompt(question, tuple(_LABELS[:len(chain)]), tuple(options))


def mmsu_item(row: dict[str, Any], rid: str, domain: str, answer_format: str = "option") -> MCItem:
    """One VoiceBench MMSU row (``prompt``, ``reference``) as an item of group ``domain``.

    Args:
        row (dict[str, Any]): the row (its ``audio`` is not read here).
        rid (str): the item id.
        domain (str): the domain split (the item's group and the subject of its header).
        answer_format (str): "option" (score the option texts) or "letter" (score `` A``, `` B``, ...).
            Default: "option".

    Returns:
        MCItem

    Raises:
        SkipItem: for an empty or unparseable prompt, or a reference that is not one of the parsed labels.

    >>> item = mmsu_item({"prompt": "Which organ pumps blood? A. heart B. lung", "reference": "A"}, "b/1", "biology")
    >>> item.spoken_texts, item.options, item.gold, item.group
    (('Which organ pumps blood? A. heart B. lung',), (' heart', ' lung'), 0, 'biology')
    """
    if answer_format not in ("option", "letter"):
        raise ValueError(f"answer_format={answer_format!r}; expected 'option' or 'letter'")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise SkipItem("empty_query", f"prompt {prompt!r}")
    parsed = parse_mc_prompt(prompt)
    answers = parsed.options if answer_format == "option" else parsed.labels
    reference = row.get("reference")
    if isinstance(reference, str):
        reference = reference.strip().strip("().").strip().upper()
    preamble = f"The following are multiple choice questions (with answers) about {domain.replace('_', ' ')}.\n\n"
    query = (Segment("Question:"), Segment(prompt.strip(), spoken=True), Segment("\nAnswer:"))
    return make_item(rid, query, [" " + a for a in answers], reference, labels=parsed.labels, group=domain,
                     preamble=preamble)


@dataclass
class DomainRows:
    """The rows of one domain: fields without audio, whether each row has audio, and a lazy audio reader."""

    rows: list[dict[str, Any]]
    has_audio: list[bool]
    audio: Callable[[int], Audio]


def _audio_value(value: Any, base: Path) -> Audio | None:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        path = Path(value)
        return path if path.is_absolute() else base / path
    return None


def _arrow_has_audio(column: Any) -> list[bool]:
    """Per row: the ``audio`` column (struct of bytes/path, or a path string) holds something."""
    import pyarrow as pa

    out: list[bool] = []
    for chunk in column.chunks:
        if pa.types.is_struct(chunk.type):
            names = [chunk.type.field(i).name for i in range(chunk.type.num_fields)]
            inner = [chunk.field(n).is_valid() for n in ("bytes", "path") if n in names]
            valid = chunk.is_valid()
            if inner:
                any_inner = inner[0] if len(inner) == 1 else pa.compute.or_(inner[0], inner[1])
                valid = pa.compute.and_(valid, any_inner)
            out.extend(valid.to_pylist())
        else:
            out.extend(chunk.is_valid().to_pylist())
    return out


def _from_arrow_dataset(ds: Any, base: Path) -> DomainRows:
    from datasets import Audio

    if "audio" not in ds.column_names:
        return DomainRows(ds.to_list(), [False] * len(ds), lambda i: b"")
    if isinstance(ds.features["audio"], Audio):
        ds = ds.cast_column("audio", Audio(decode=False))
    has = _arrow_has_audio(ds.with_format("arrow")["audio"])
    return DomainRows(ds.remove_columns(["audio"]).to_list(), has, lambda i: _audio_value(ds[i]["audio"], base))


def _from_parquet(files: Sequence[Path]) -> DomainRows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in files])
    base = files[0].parent
    if "audio" not in table.column_names:
        return DomainRows(table.to_pylist(), [False] * table.num_rows, lambda i: b"")
    audio_col = table.column("audio")
    rows = table.drop_columns(["audio"]).to_pylist()
    return DomainRows(rows, _arrow_has_audio(audio_col), lambda i: _audio_value(audio_col[i].as_py(), base))


def _from_jsonl(path: Path, default_domain: str) -> dict[str, DomainRows]:
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for n, row in iter_jsonl(path, "one MMSU row per line"):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object with prompt, reference, audio")
        by_domain.setdefault(str(row.get("domain") or default_domain), []).append(row)
    out = {}
    for domain, rows in by_domain.items():
        audio = [_audio_value(r.get("audio"), path.parent) for r in rows]
        meta = [{k: v for k, v in r.items() if k != "audio"} for r in rows]
        out[domain] = DomainRows(meta, [a is not None for a in audio], lambda i, audio=audio: audio[i])
    return out


def read_mmsu(path: str | Path, domains: Sequence[str] | None = None) -> dict[str, DomainRows]:
    """The rows of a local VoiceBench MMSU copy, per domain (layouts in the module docstring).

    Args:
        path (str | Path): a ``save_to_disk`` directory, a directory of parquet or JSONL files, or a JSONL file.
        domains (Sequence[str] | None): read only these domains. Default: None (all found).

    Returns:
        dict[str, DomainRows]: domain -> rows, in sorted domain order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if no MMSU data is found there (listing the accepted layouts), or a requested domain is absent
            (listing those present), or a JSONL line is not valid JSON (naming the file and line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VoiceBench MMSU data {path} does not exist")
    found: dict[str, DomainRows] = {}
    if path.is_file() and path.suffix == ".jsonl":
        found = _from_jsonl(path, path.stem)
    elif (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            found = {name: _from_arrow_dataset(data[name], path) for name in data
                     if domains is None or name in domains}
            for name in data:
                found.setdefault(name, DomainRows([], [], lambda i: b""))
        else:
            found = {path.name: _from_arrow_dataset(data, path)}
    elif path.is_dir():
        root = path / "mmsu" if (path / "mmsu").is_dir() else path
        parquet: dict[str, list[Path]] = {}
        for f in sorted(root.rglob("*.parquet")):
            m = _PARQUET_NAME.match(f.stem)
            parquet.setdefault(m["domain"] if m else f.parent.name, []).append(f)
        if parquet:
            found = {d: _from_parquet(fs) for d, fs in parquet.items() if domains is None or d in domains}
            found.update({d: DomainRows([], [], lambda i: b"") for d in parquet if d not in found})
        else:
            for f in sorted(root.glob("*.jsonl")):
                part = _from_jsonl(f, f.stem)
                if clash := sorted(set(part) & set(found)):
                    raise ValueError(f"{f}: domain(s) {clash} also come from another JSONL file in {root}; give each "
                                     "domain one file")
                found.update(part)
    if not found:
        raise ValueError(f"{path}: no VoiceBench MMSU data found; expected a datasets.save_to_disk directory, "
                         "parquet files named <domain>-00000-of-00001.parquet, or <domain>.jsonl files with "
                         "prompt, reference and audio (a wav path)")
    if domains is not None:
        missing = sorted(set(domains) - set(found))
        if missing:
            raise ValueError(f"{path}: no domain split(s) {missing}; it has {sorted(found)}")
        found = {d: found[d] for d in domains}
    return dict(sorted(found.items()))


@dataclass
class MMSULoad:
    """A loaded MMSU benchmark with its recorded speech.

    Attributes:
        benchmark (Benchmark): items (group = domain) and shot pool (held-out items of the same domain).
        speech (RecordedSpeech | None): the recordings of every item's prompt; None for the stand-in.
        rows_per_domain (dict[str, int]): rows read per domain.
        items_per_domain (dict[str, int]): valid items per domain (before ``n_items`` selection).
        skipped_per_domain (dict[str, dict[str, int]]): rows skipped per domain and reason.
        stand_in (bool): True when the offline ``mmlu`` stand-in was loaded instead.
    """

    benchmark: Benchmark
    speech: RecordedSpeech | None
    rows_per_domain: dict[str, int]
    items_per_domain: dict[str, int]
    skipped_per_domain: dict[str, dict[str, int]]
    stand_in: bool = False


def _stand_in(n_items: int | None, seed: int) -> MMSULoad:
    log.info("mmsu: no local VoiceBench copy configured; using the offline 'mmlu' stand-in (synthesized speech)")
    bench = load_benchmark("mmlu", n_items=n_items, seed=seed)
    per: dict[str, int] = {}
    for it in bench.items:
        per[it.group] = per.get(it.group, 0) + 1
    return MMSULoad(bench, None, {}, per, {}, stand_in=True)


def load_mmsu(path: str | Path | None = None, domains: Sequence[str] | None = None, n_items: int | None = None,
              seed: int = 0, answer_format: str = "option", fallback: Any = None) -> MMSULoad:
    """Load VoiceBench MMSU from a local copy as items plus their recorded speech (or the ``mmlu`` stand-in).

    Args:
        path (str | Path | None): the local copy (see :func:`read_mmsu`); None loads the offline ``mmlu``
            stand-in. Default: None.
        domains (Sequence[str] | None): only these domain splits. Default: None (all).
        n_items (int | None): score a seeded subset of this many items (over all domains). Default: None.
        seed (int): subset seed. Default: 0.
        answer_format (str): "option" or "letter", see :func:`mmsu_item`. Default: "option".
        fallback (SpokenSource | None): voices texts that have no recording (other benchmarks of the same run),
            see :class:`~nemo_salad.evaluation.recorded.RecordedSpeech`. Default: None.

    Returns:
        MMSULoad: pass ``.benchmark`` to the harness and ``.speech`` as its spoken source.

    Raises:
        ValueError: if no valid item remains (naming the file and the skip counts), or as :func:`read_mmsu`.

    >>> load = load_mmsu(None, n_items=3)
    >>> load.stand_in, load.benchmark.name, len(load.benchmark.items), load.speech is None
    (True, 'mmlu', 3, True)
    """
    if path is None:
        return _stand_in(n_items, seed)
    data = read_mmsu(path, domains)
    items: list[MCItem] = []
    recordings: dict[str, AudioRef] = {}
    rows_per, items_per, skipped_per = {}, {}, {}
    totals = SkipCounter(str(path))
    n_duplicate = 0
    for domain, part in data.items():
        skips = SkipCounter(f"{path} [{domain}]")
        kept = 0
        for i, row in enumerate(part.rows):
            rid = f"{domain}/{row.get('question_id', row.get('id', i))}"
            try:
                if not part.has_audio[i]:
                    raise SkipItem("no_audio", "the audio field is empty")
                item = mmsu_item(row, rid, domain, answer_format)
            except SkipItem as err:
                skips.add(err, rid)
                totals.add(err, rid)
                continue
            text = item.spoken_texts[0]
            if text in recordings:
                n_duplicate += 1
            else:
                recordings[text] = lambda i=i, part=part: part.audio(i)
            items.append(item)
            kept += 1
        skips.log_summary("mmsu", len(part.rows))
        rows_per[domain], items_per[domain], skipped_per[domain] = len(part.rows), kept, dict(skips.counts)
    if len({it.id for it in items}) != len(items):  # ids must be unique: fall back to positional ids
        items = [MCItem(f"{n}:{it.id}", it.query, it.options, it.gold, it.group, it.preamble)
                 for n, it in enumerate(items)]
    if n_duplicate:
        log.warning("mmsu (%s): %d items repeat the prompt text of an earlier item; the first item's recording is "
                    "used for all of them", path, n_duplicate)
    n_rows = sum(rows_per.values())
    if not items:
        raise ValueError(f"mmsu: no valid items in {path} ({n_rows} rows read; skipped per reason: "
                         f"{dict(totals.counts) or 'none'}; e.g. {totals.examples})")
    bench = Benchmark("mmsu", "MMSU", ",".join(data), str(path), select_items(items, n_items, seed), items,
                      f"held-out items of {path}", n_rows, dict(totals.counts))
    return MMSULoad(bench, RecordedSpeech(recordings, fallback=fallback), rows_per, items_per, skipped_per)
