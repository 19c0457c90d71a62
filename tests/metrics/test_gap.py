"""Forgetting and misalignment: zero where they must be, equal to a direct full-logit computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nemo_salad.metrics import gap_stats, next_token_positions
from nemo_salad.models.salad import SaladModel
from tests.helpers.batches import identity_speech, make_batch, speech_in_context
from tests.helpers.tiny import model_cfg


@pytest.fixture()
def model(tiny_tokenizer_dir):
    torch.manual_seed(0)
    return SaladModel(model_cfg(tiny_tokenizer_dir)).eval()


def _kl_sum(ref_logits, logits):
    """sum over rows of KL(softmax(ref) || softmax(logits)), via torch.nn.functional.kl_div in float64."""
    return F.kl_div(logits.double().log_softmax(-1), ref_logits.double().log_softmax(-1), log_target=True,
                    reduction="sum").item()


def test_forgetting_is_zero_when_student_equals_teacher(model):
    stats = gap_stats(model, make_batch(model, "interleaved"))
    assert stats.forgetting_tokens > 20 and stats.forgetting == 0.0


def test_misalignment_is_zero_on_the_identity_path(model):
    batch = make_batch(model, "prefix", identity=True)
    stats = gap_stats(model, batch, speech=identity_speech(model, batch))
    assert stats.misalignment_tokens > 10 and stats.misalignment < 1e-10


def test_both_equal_a_direct_full_logit_computation(model):
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(0.02 * torch.randn_like(p))  # the student drifts from the teacher
    batch = make_batch(model, "lead")
    assert not all(speech_in_context(batch))  # some compared positions come before any speech
    stats = gap_stats(model, batch, chunk_size=7)
    with torch.no_grad():
        sb = batch  # one document per row: plain padding masks are an independent reference
        text_logits = model.llm(input_ids=sb.teacher_ids, padding_mask=sb.teacher_mask).flatten(0, 1)
        speech_logits = model.llm(inputs_embeds=model.student_inputs(sb), padding_mask=sb.student_mask).flatten(0, 1)
        teacher_logits = model.teacher(input_ids=sb.teacher_ids, padding_mask=sb.teacher_mask).flatten(0, 1)
        pos = next_token_positions(sb.teacher_mask)
        f = _kl_sum(teacher_logits[pos], text_logits[pos]) / len(pos)
        heard = torch.tensor(speech_in_context(sb))  # the documented positions: speech in the student's context
        m = _kl_sum(text_logits[sb.teacher_pos[heard]], speech_logits[sb.student_pos[heard]]) / int(heard.sum())
    assert stats.forgetting > 1e-4 and stats.forgetting == pytest.approx(f, rel=1e-4)
    assert stats.misalignment > 1e-3 and stats.misalignment == pytest.approx(m, rel=1e-4)
