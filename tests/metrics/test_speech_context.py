"""Misalignment counts only positions whose context holds speech: text before the first speech span (where the
student reads the same text as on the text side) does not dilute M, for a batch and for a selection probe's M(c)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from nemo_salad.data.batch import FrameCounter, SaladBatch, Segment, collate, make_document
from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.layout import LayoutConfig
from nemo_salad.metrics import gap_stats, misalignment_fn
from tests.helpers.batches import speech_in_context
from tests.helpers.tone_speech import tone_cuts

HOP = 1280  # audio samples per frame of the stand-in's frame counter


class SpeechCountLM:
    """A causal stand-in LM whose prediction at a position depends on its token and on how many speech frames came
    before it in its document: ``hidden = E[token] + (speech frames so far) · v`` (speech slots read ``E = 0``).

    Text before the first speech span therefore gets the same prediction on the speech side as on the text side, and
    every later prediction does not depend on how much text came first: the true misalignment of a document does not
    change when its leading text grows. It offers what :func:`gap_stats` and :func:`measure_gap` read of a model.
    """

    def __init__(self, tokenizer, vocab: int, hidden: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(vocab, hidden, generator=g)
        self.v = torch.randn(hidden, generator=g)
        self.llm = SimpleNamespace(output_weight=torch.randn(vocab, hidden, generator=g), tp_group=None)
        self.teacher_mode, self.tokenizer, self.pad_id, self.context_length = "none", tokenizer, 0, 4096
        self.device = torch.device("cpu")

    def eval(self) -> SpeechCountLM:
        return self

    def frame_counter(self, max_seconds: float = 40.0) -> FrameCounter:
        return FrameCounter.from_formula(lambda n: torch.div(n, HOP, rounding_mode="floor"), int(16000 * max_seconds))

    def student_text_hidden(self, batch: SaladBatch) -> torch.Tensor:
        return self.embed[batch.teacher_ids]

    def student_hidden(self, batch: SaladBatch, speech=None) -> torch.Tensor:
        seen = torch.zeros(batch.student_ids.shape)
        for r in range(seen.shape[0]):  # speech frames up to each position, counted within its document
            count, doc = 0, None
            for t in range(seen.shape[1]):
                d = int(batch.student_doc[r, t])
                count = 0 if d != doc else count
                doc = d
                count += int(batch.speech_mask[r, t])
                seen[r, t] = count
        h = self.embed[batch.student_ids] * (~batch.speech_mask)[..., None]
        return h + seen[..., None] * self.v


def _kl(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per row KL(softmax(ref) ‖ softmax(other)) in float64."""
    p, q = ref.double().log_softmax(-1), other.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def _reference(model: SpeechCountLM, batch: SaladBatch) -> tuple[float, float]:
    """(M over the documented positions, the mean over every compared pair), from full logits in float64."""
    w = model.llm.output_weight.double()
    speech = model.student_hidden(batch).double().flatten(0, 1)[batch.student_pos] @ w.T
    text = model.student_text_hidden(batch).double().flatten(0, 1)[batch.teacher_pos] @ w.T
    kl = _kl(text, speech)
    keep = torch.tensor(speech_in_context(batch))
    return float(kl[keep].mean()), float(kl.mean())


def _batch(prefixes: list[int], pack_length: int | None) -> SaladBatch:
    """Documents ``[text: prefix tokens][speech: 3 tokens, 4 frames][text: 5 tokens]`` with given prefix lengths."""
    fc = FrameCounter.from_formula(lambda n: torch.div(n, HOP, rounding_mode="floor"), 16000)
    docs, clips = [], []
    for i, n in enumerate(prefixes):
        segs = [Segment("text", [3 + (7 * k + i) % 40 for k in range(n)])] if n else []
        segs += [Segment("speech", [50, 51, 52], len(clips)), Segment("text", [60, 61, 62, 63, 64])]
        clips.append(torch.zeros(4 * HOP))
        docs.append(make_document(f"d{i}", segs, [len(c) for c in clips], fc, pad_id=0))
    return collate(docs, clips, pad_id=0, pack_length=pack_length)


@pytest.mark.parametrize("pack_length", [None, 64])
def test_leading_text_leaves_misalignment_unchanged(pack_length):
    model = SpeechCountLM(None, vocab=70)
    short, long = _batch([1, 2], pack_length), _batch([6, 20], pack_length)
    m_short, m_long = gap_stats(model, short, chunk_size=5), gap_stats(model, long, chunk_size=5)
    ref_short, all_short = _reference(model, short)
    ref_long, all_long = _reference(model, long)
    assert m_short.misalignment == pytest.approx(ref_short, rel=1e-5)
    assert m_long.misalignment == pytest.approx(ref_long, rel=1e-5)
    assert m_short.misalignment_tokens == m_long.misalignment_tokens == 2 * 5  # 5 per document
    assert m_long.misalignment == pytest.approx(m_short.misalignment, rel=1e-5)
    assert all_long < 0.8 * all_short  # the average over every compared pair is what moved with the leading text


def test_packed_rows_do_not_lend_speech_to_the_next_document():
    model = SpeechCountLM(None, vocab=70)
    one_per_row, packed = _batch([3, 8, 5], None), _batch([3, 8, 5], 64)
    assert packed.student_ids.shape[0] == 1  # the second document's leading text follows the first's speech
    assert speech_in_context(packed) == packed.speech_context().tolist()
    a, b = gap_stats(model, one_per_row), gap_stats(model, packed)
    assert (a.misalignment_tokens, a.misalignment) == (b.misalignment_tokens, pytest.approx(b.misalignment, rel=1e-6))


def test_text_only_documents_give_no_misalignment_tokens():
    model = SpeechCountLM(None, vocab=70)
    doc = make_document("t", [Segment("text", [5, 6, 7, 8])], [], None, pad_id=0)
    stats = gap_stats(model, collate([doc], [], pad_id=0))
    assert stats.misalignment_tokens == 0 and math.isnan(stats.misalignment)  # nothing measured, not zero


def test_probe_misalignment_is_unchanged_by_leading_text(tiny_tokenizer_dir, tmp_path):
    """M(c) as Stage II selection measures it (``misalignment_fn`` → the dataset's layout → :func:`gap_stats`)."""
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    model = SpeechCountLM(tok, vocab=len(tok))
    speech, tail = "speech and text are", "two views"
    results = {}
    for lead in ("the cat", "the cat sat on the mat and a dog ran in the park"):
        k = len(lead.split())  # one text span of the leading words, one speech span, the tail as text
        layout = LayoutConfig(kind="interleaved", start_with="text", text_words=(k, k), speech_words=(4, 4),
                              min_words=2)
        cuts = tone_cuts([f"{lead} {speech} {tail}"], tmp_path / f"lead{k}", prefix=f"k{k}")
        m = misalignment_fn(model, layout)(cuts)
        batch = SaladDataset(tok, layout, frames=model.frame_counter(), pad_id=0, max_len=4096)[cuts]
        assert [s.kind for s in batch.segments[0]] == ["text", "speech", "text"]
        results[k] = (m, _reference(model, batch))
    (m_short, (ref_short, all_short)), (m_long, (ref_long, all_long)) = results.values()
    assert m_short == pytest.approx(ref_short, rel=1e-5) and m_long == pytest.approx(ref_long, rel=1e-5)
    assert m_long == pytest.approx(m_short, rel=1e-5)
    assert all_long < 0.8 * all_short
