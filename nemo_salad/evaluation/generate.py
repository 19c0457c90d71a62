"""Generate-then-extract multiple-choice scoring (the VoiceBench protocol), beside the log-likelihood harness.

Every system *generates* a short answer to a lettered multiple-choice prompt, and
:func:`~nemo_salad.evaluation.extract.extract_choice` reads the chosen letter out of it; when no letter can be
extracted a seeded random option is scored and the item counts as a failure (``fail_rate``).

Prompt (:func:`generative_item`), zero-shot, built from an item's segments exactly as the harness renders them
(text segments as token ids, spoken segments through ``system.spoken_inputs``: token ids in the text and cascade
conditions, speech embeddings ``(T_i, H)`` for the speech model)::

    [preamble]<query without its trailing "\\nAnswer:" cue>
    A. <option 1>
    B. <option 2>
    ...
    Answer with the letter of the correct option.
    Answer:

Modality: by default only the question is spoken and the lettered options are read as text — the
log-likelihood harness's split (options are always text continuations there), so the text–speech gap measures
the question's modality alone and the answer format is identical in every system. VoiceBench's MMSU speaks the
question *and* the options; ``GenerationSettings(options_spoken=True)`` does that: each option's text becomes a
spoken segment after its text label ``"\\nA."``. Items whose spoken question already holds the lettered options
(VoiceBench's MMSU recordings, :mod:`nemo_salad.evaluation.voicebench`) take ``list_options=False``: the options
are not listed again.

Decoding (:func:`generate_tokens`): the LLM's own forward over the embedded prompt, extended one token at a time
without a KV cache (answers are a few tokens): greedy (``temperature=0``) or sampled from
``softmax(logits / temperature)`` with one generator per item seeded by ``(seed, item id)``. A row stops at an
EOS id (the tokenizer's and the LLM config's), at a newline once some non-space text was generated, or after
``max_new_tokens``. Several items are decoded at once, right-padded: each row's positions and causal context are
those of its unpadded forward.

Items whose speech could not be synthesized (``no_speech``) or whose prompt plus ``max_new_tokens`` exceeds the
context of some system (``too_long``) are left out of every system and counted in ``skipped``.

Legend: ``B`` rows, ``T`` padded length, ``L`` prompt length, ``H`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nemo_salad.evaluation.extract import extract_choice, fallback_choice, option_labels
from nemo_salad.evaluation.harness import Renderer
from nemo_salad.evaluation.items import MCItem, Segment, speakable
from nemo_salad.evaluation.loaders import Benchmark
from nemo_salad.evaluation.prompts import prompt_segments
from nemo_salad.evaluation.spoken import SpokenSource

__all__ = ["INSTRUCTION", "GenerationSettings", "eos_token_ids", "generate_and_extract", "generate_tokens",
           "generative_item"]

log = logging.getLogger(__name__)

#: the instruction after the lettered options
INSTRUCTION = "Answer with the letter of the correct option."
#: the cloze cue that ends the question layout; moved to the end of the generative prompt
_CUE = "Answer:"


@dataclass
class GenerationSettings:
    """How answers are generated and scored.

    Args:
        max_new_tokens (int): most generated tokens per answer. Default: 16.
        temperature (float): 0 for greedy decoding, else sampling temperature. Default: 0.0.
        seed (int): seeds the sampling and the random fallback letter (per item). Default: 0.
        stop_at_newline (bool): stop a row at a newline once it has non-space text. Default: True.
        options_spoken (bool): the options are spoken too (VoiceBench MMSU), not read as text. Default: False.
        list_options (bool): list the lettered options after the question; False when the question already holds
            them (VoiceBench MMSU recordings). Default: True.
        instruction (str): the line after the options. Default: :data:`INSTRUCTION`.
        batch_size (int): items decoded together. Default: 8.
        max_tokens (int | None): prompt + ``max_new_tokens`` budget; None: the LLM's context. Default: None.
        chunk_items (int): items rendered at once (bounds memory for speech embeddings). Default: 256.

    >>> GenerationSettings(temperature=0.7, seed=3).max_new_tokens
    16
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    seed: int = 0
    stop_at_newline: bool = True
    options_spoken: bool = False
    list_options: bool = True
    instruction: str = INSTRUCTION
    batch_size: int = 8
    max_tokens: int | None = None
    chunk_items: int = 256

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.chunk_items < 1:
            raise ValueError(f"need max_new_tokens, batch_size, chunk_items >= 1, got {self.max_new_tokens}, "
                             f"{self.batch_size}, {self.chunk_items}")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}; expected 0 (greedy) or a positive temperature")
        if self.options_spoken and not self.list_options:
            raise ValueError("options_spoken=True needs list_options=True (unlisted options cannot be spoken)")


def generative_item(item: MCItem, instruction: str = INSTRUCTION, options_spoken: bool = False,
                    list_options: bool = True) -> MCItem:
    """``item`` with its query replaced by the lettered generative prompt (see the module docstring).

    Args:
        item (MCItem): a log-likelihood item (options are the continuations, leading space included).
        instruction (str): the line after the options. Default: :data:`INSTRUCTION`.
        options_spoken (bool): each option text is a spoken segment. Default: False.
        list_options (bool): list the options ``"\\nA. <option>"``; False when the query already holds them.
            Default: True.

    Returns:
        MCItem: same id, options, gold, group and preamble; the query is the whole generative prompt.

    >>> item = MCItem("q", (Segment("Question:"), Segment("2+2?", True), Segment("\\nAnswer:")), (" 4", " 5"), 0)
    >>> "".join((" " if s.spoken else "") + s.text for s in generative_item(item).query)
    'Question: 2+2?\\nA. 4\\nB. 5\\nAnswer with the letter of the correct option.\\nAnswer:'
    """
    query = list(item.query)
    if query and not query[-1].spoken and query[-1].text.strip() == _CUE:
        query.pop()
    for label, option in zip(option_labels(len(item.options)), item.options, strict=True):
        if not list_options:
            break
        if options_spoken:
            query += [Segment(f"\n{label}."), Segment(speakable(option) or option.strip(), spoken=True)]
        else:
            query.append(Segment(f"\n{label}. {option.strip()}"))
    query.append(Segment(f"\n{instruction}\n{_CUE}"))
    return MCItem(item.id, tuple(query), item.options, item.gold, item.group, item.preamble)


def eos_token_ids(llm: Any, tokenizer: Any) -> set[int]:
    """The EOS ids of the tokenizer and of the LLM config (either may have none).

    >>> eos_token_ids(None, type("Tok", (), {"eos_token_id": 2})())
    {2}
    """
    out: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(llm, "cfg", None), "eos_token_id", None)):
        if isinstance(value, int):
            out.add(value)
        elif isinstance(value, (list, tuple)):
            out.update(int(v) for v in value)
    return out


def _row_seed(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}/{key}".encode())


@torch.no_grad()
def generate_tokens(llm: Any, prompts: Sequence[Tensor], max_new_tokens: int, eos_ids: set[int] | None = None,
                    temperature: float = 0.0, seeds: Sequence[int] | None = None,
                    should_stop: Callable[[list[int]], bool] | None = None) -> list[tuple[list[int], str]]:
    """Decode a continuation of each prompt with the LLM's full forward at every step (no KV cache).

    Args:
        llm (MegatronLLM): the model (its mode is left as is: call ``.eval()`` first).
        prompts (Sequence[Tensor]): ``(L_i, H)`` input embeddings, ``L_i >= 1``, decoded together.
        max_new_tokens (int): most new tokens per prompt.
        eos_ids (set[int] | None): a row ends after generating one of these (kept in its ids). Default: None.
        temperature (float): 0: argmax; else sample ``softmax(logits / temperature)``. Default: 0.0.
        seeds (Sequence[int] | None): one sampling seed per prompt (needed when sampling). Default: None.
        should_stop (Callable[[list[int]], bool] | None): called with a row's new ids after each token; True
            ends the row. Default: None.

    Returns:
        list[tuple[list[int], str]]: per prompt, the new token ids and why it stopped: ``"eos"``, ``"stop"``
        (``should_stop``) or ``"length"``.

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama")).eval()
    >>> [(len(ids), why) for ids, why in generate_tokens(llm, [llm.embed(torch.tensor([[5, 6]]))[0]], 3)]
    [(3, 'length')]
    """
    if temperature > 0 and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError(f"sampling (temperature={temperature}) needs one seed per prompt, got "
                         f"{None if seeds is None else len(seeds)} for {len(prompts)} prompts")
    if any(p.dim() != 2 or p.shape[0] < 1 for p in prompts):
        raise ValueError(f"prompts must be (L>=1, H) embeddings, got shapes {[tuple(p.shape) for p in prompts]}")
    if not prompts:
        return []
    eos_ids = eos_ids or set()
    device, dtype = prompts[0].device, prompts[0].dtype
    lengths = [p.shape[0] for p in prompts]
    buf = prompts[0].new_zeros(len(prompts), max(lengths) + max_new_tokens, prompts[0].shape[1])  # (B, T, H)
    for b, p in enumerate(prompts):
        buf[b, :lengths[b]] = p
    rngs = None
    if temperature > 0:
        rngs = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    new: list[list[int]] = [[] for _ in prompts]
    why: list[str | None] = [None] * len(prompts)
    for _ in range(max_new_tokens):
        active = [b for b in range(len(prompts)) if why[b] is None]
        if not active:
            break
        lens = torch.tensor([lengths[b] for b in active], device=device)
        width = int(lens.max())
        x = buf[active, :width]  # (A, T, H)
        mask = None if bool((lens == width).all()) else torch.arange(width, device=device)[None] < lens[:, None]
        hidden = llm.hidden_states(inputs_embeds=x, padding_mask=mask)  # (A, T, H)
        last = hidden[torch.arange(len(active), device=device), lens - 1]  # (A, H)
        logits = llm.logits(last).float()  # (A, V)
        if rngs is None:
            tokens = logits.argmax(-1).tolist()
        else:
            probs = (logits / temperature).softmax(-1)
            tokens = [int(torch.multinomial(probs[i], 1, generator=rngs[b])) for i, b in enumerate(active)]
        emb = llm.embed(torch.tensor(tokens, device=device)[None])[0].to(dtype)  # (A, H)
        for i, (b, tok) in enumerate(zip(active, tokens, strict=True)):
            buf[b, lengths[b]] = emb[i]
            lengths[b] += 1
            new[b].append(tok)
            if tok in eos_ids:
                why[b] = "eos"
            elif should_stop is not None and should_stop(new[b]):
                why[b] = "stop"
    return [(ids, w or "length") for ids, w in zip(new, why, strict=True)]


def _newline_stop(tokenizer: Any) -> Callable[[list[int]], bool]:
    return lambda ids: "\n" in tokenizer.decode(ids, skip_special_tokens=True).lstrip()


def _response(tokenizer: Any, ids: list[int], eos_ids: set[int], stop_at_newline: bool) -> str:
    text = tokenizer.decode([t for t in ids if t not in eos_ids], skip_special_tokens=True).strip()
    return text.split("\n", 1)[0].strip() if stop_at_newline else text


def _voice(items: list[MCItem], speech: SpokenSource, key: str, skipped: dict[str, int]) -> tuple[list, dict]:
    texts = sorted({t for it in items for t in it.spoken_texts})
    cuts = speech.cuts_for(key, texts)
    keep = [it for it in items if all(t in cuts for t in it.spoken_texts)]
    if len(keep) < len(items):
        skipped["no_speech"] = len(items) - len(keep)
        log.warning("%s: %d items have no speech (synthesis failed) and are left out of every system", key,
                    len(items) - len(keep))
    return keep, cuts


def _decode_system(r: Renderer, items: list[MCItem], settings: GenerationSettings, out: dict[str, Any]) -> None:
    """Generate, extract and record the answers of one system to ``items`` (appends to ``out["records"]``)."""
    llm, tok = r.system.llm, r.system.tokenizer
    eos = eos_token_ids(llm, tok)
    stop = _newline_stop(tok) if settings.stop_at_newline else None
    start, was_training = time.perf_counter(), llm.training
    llm.eval()
    try:
        order = sorted(range(len(items)), key=lambda i: -r.length(prompt_segments(items[i], [])))
        for s in range(0, len(order), settings.batch_size):
            batch = [items[i] for i in order[s:s + settings.batch_size]]
            prompts = [r.context(prompt_segments(it, [])) for it in batch]
            seeds = [_row_seed(settings.seed, it.id) for it in batch]
            gens = generate_tokens(llm, prompts, settings.max_new_tokens, eos, settings.temperature, seeds, stop)
            for it, (ids, why) in zip(batch, gens, strict=True):
                response = _response(tok, ids, eos, settings.stop_at_newline)
                extracted, rule = extract_choice(response, [o.strip() for o in it.options])
                fallback = extracted is None
                pred = fallback_choice(len(it.options), settings.seed, it.id) if fallback else extracted
                out["records"].append({"id": it.id, "gold": it.gold, "response": response, "extracted": extracted,
                                       "rule": rule, "pred": pred, "fallback": fallback, "correct": pred == it.gold,
                                       "n_new_tokens": len(ids), "stop": why})
    finally:
        llm.train(was_training)
    out["seconds"] += time.perf_counter() - start


def generate_and_extract(bench_items: Benchmark | Sequence[MCItem], systems: Sequence[Any],
                         speech_source: SpokenSource | None = None, settings: GenerationSettings | None = None
                         ) -> dict[str, dict[str, Any]]:
    """Every system generates an answer to every item; the chosen letter is extracted and scored.

    Args:
        bench_items (Benchmark | Sequence[MCItem]): a loaded benchmark or its items.
        systems (Sequence[System]): see :mod:`nemo_salad.evaluation.systems` (names must be unique).
        speech_source (SpokenSource | None): voices the spoken texts; required when a system needs audio.
        settings (GenerationSettings | None): Default: ``GenerationSettings()``.

    Returns:
        dict[str, dict]: per system name: ``role``, ``n`` (items scored), ``accuracy`` (failures scored with
        their random fallback, as VoiceBench), ``fail_rate`` (failed extractions / n), ``n_failed``, ``rules``
        (items per rule), ``seconds`` (speech encoding / ASR + decoding), ``skipped`` (items left out of every
        system, per reason) and ``records`` (per item, in item order: ``id, gold, response, extracted`` (index or
        None), ``rule, pred`` (the scored index), ``fallback, correct, n_new_tokens, stop`` (``"eos"``,
        ``"stop"`` = newline, or ``"length"``)).

    Raises:
        ValueError: on duplicate system names, a missing speech source, or when no item is left to score.

    >>> res = generate_and_extract(load_benchmark("arc_easy", n_items=20), [TextSystem(llm, tok)])  # doctest: +SKIP
    >>> topline = res["text_llm"]  # doctest: +SKIP
    >>> topline["accuracy"], topline["fail_rate"], topline["records"][0]["rule"]  # doctest: +SKIP
    (0.55, 0.05, 'letter_punct')
    """
    settings = settings or GenerationSettings()
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    bench = bench_items if isinstance(bench_items, Benchmark) else None
    key = f"{bench.name}-{bench.split}-generate" if bench else "generate"
    items = [generative_item(it, settings.instruction, settings.options_spoken, settings.list_options)
             for it in (bench.items if bench else bench_items)]
    skipped: dict[str, int] = dict(bench.skipped) if bench else {}
    cuts: dict[str, Any] = {}
    if any(s.needs_audio for s in systems):
        if speech_source is None:
            raise ValueError(f"systems {[s.name for s in systems if s.needs_audio]} need audio: pass a SpokenSource")
        items, cuts = _voice(items, speech_source, f"{key}-{len(items)}", skipped)
    renderers = [Renderer(s, spoken_shots=True) for s in systems]
    out = {s.name: {"role": s.role, "seconds": 0.0, "records": []} for s in systems}
    n_kept = 0
    for start in range(0, len(items), settings.chunk_items):
        chunk = items[start:start + settings.chunk_items]
        texts = {t for it in chunk for t in it.spoken_texts}
        for r in renderers:
            r.prepare(texts, cuts)
        keep = [it for it in chunk if all(_fits(r, it, settings) for r in renderers)]
        if len(keep) < len(chunk):
            skipped["too_long"] = skipped.get("too_long", 0) + len(chunk) - len(keep)
        for r in renderers:
            _decode_system(r, keep, settings, out[r.system.name])
            r.forget(texts)
        n_kept += len(keep)
    if skipped.get("too_long"):
        log.warning("%s: %d items left out of every system: prompt + max_new_tokens exceeds the context", key,
                    skipped["too_long"])
    if n_kept == 0:
        raise ValueError(f"{key}: no item left to score (skipped: {skipped})")
    for r in renderers:  # speech encoding / ASR time
        out[r.system.name]["seconds"] += r.seconds
    position = {it.id: n for n, it in enumerate(items)}
    for entry in out.values():
        recs = sorted(entry["records"], key=lambda rec: position[rec["id"]])
        n_failed = sum(rec["fallback"] for rec in recs)
        entry.update(records=recs, n=len(recs), accuracy=sum(rec["correct"] for rec in recs) / len(recs),
                     fail_rate=n_failed / len(recs), n_failed=n_failed, rules=dict(Counter(r["rule"] for r in recs)),
                     skipped=dict(skipped))
    return out


def _fits(r: Renderer, item: MCItem, settings: GenerationSettings) -> bool:
    limit = getattr(getattr(r.system.llm, "cfg", None), "max_position_embeddings", None)
    if settings.max_tokens is not None:
        limit = settings.max_tokens if limit is None else min(limit, settings.max_tokens)
    return limit is None or r.length(prompt_segments(item, [])) + settings.max_new_tokens <= limit
