"""The batch contract (nemo_salad.data.batch): documents, the pair map, packing, attention inside documents, and the
checks that skip a sample (each named once)."""

from __future__ import annotations

import pytest
import torch

from nemo_salad.data.batch import FrameCounter, SaladBatch, Segment, SkipSample, collate, make_document, pack_rows

FRAMES = FrameCounter.from_formula(lambda n: torch.div(n, 100, rounding_mode="floor"), 1000)


def _docs():
    clips = [torch.full((300,), 0.5), torch.full((200,), -0.5)]
    plans = [[Segment("speech", [1, 2], 0), Segment("text", [3, 4])],
             [Segment("text", [5]), Segment("speech", [6], 1), Segment("text", [8, 9, 10])]]
    return [make_document(f"d{i}", p, [len(c) for c in clips], FRAMES, pad_id=0) for i, p in enumerate(plans)], clips


def test_speech_first_document_and_its_pairs():
    docs, clips = _docs()
    batch = collate(docs, clips, pad_id=0)
    assert batch.student_ids.shape == (2, 6) and batch.teacher_ids.shape == (2, 5)
    assert batch.student_mask[0].tolist() == [True] * 5 + [False]
    assert batch.speech_mask[0].tolist() == [True, True, True, False, False, False]
    assert batch.teacher_ids[0].tolist() == [1, 2, 3, 4, 0]
    pairs = [(int(s) // 6, int(s) % 6, int(t) % 5, int(y)) for s, t, y in zip(batch.student_pos, batch.teacher_pos,
                                                                             batch.targets)]
    # document 0: the first text token (3) is predicted from the last speech frame (student position 2)
    assert (0, 2, 1, 3) in pairs and (0, 3, 2, 4) in pairs
    assert (1, 2, 1, 8) in pairs  # document 1: frames at 1..2 predict token 8 (student 3, teacher 2)
    assert batch.clip_frames.tolist() == [3, 2] and batch.audio_lens.tolist() == [300, 200]


def test_packing_keeps_documents_apart():
    docs, clips = _docs()
    batch = collate(docs, clips, pad_id=0, pack_length=16)
    assert batch.student_ids.shape == (1, 11) and batch.padded_fraction == 0.0
    assert batch.student_doc[0].tolist() == [0] * 5 + [1] * 6
    assert batch.student_positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
    mask = SaladBatch.attention_mask(batch.student_doc)[0, 0]
    assert mask[5, :5].all() and not mask[5, 5] and mask[4, 5]  # document 1 sees none of document 0, and causal
    # the same pairs, moved with their document
    alone = [collate([d], clips, pad_id=0) for d in docs]
    for k, one in enumerate(alone):
        mine = batch.sample_index == k
        assert torch.equal(batch.targets[mine], one.targets)
        assert torch.equal(batch.student_ids.flatten()[batch.student_pos[mine]], one.student_ids.flatten()[
            one.student_pos])
    assert batch.teacher_next_positions().tolist() == [0, 1, 2, 4, 5, 6, 7]  # never across the document boundary


def test_clips_follow_their_slots_after_packing():
    """Packing reorders documents; clips are renumbered so that row-major slot order is clip order."""
    clips = [torch.full((500,), 1.0), torch.full((100,), 2.0), torch.full((300,), 3.0)]
    plans = [[Segment("speech", [1], 1), Segment("text", [2])], [Segment("speech", [3], 2), Segment("text", [4])],
             [Segment("text", [7] * 8), Segment("speech", [5], 0), Segment("text", [6])]]
    docs = [make_document(f"d{i}", p, [len(c) for c in clips], FRAMES, 0) for i, p in enumerate(plans)]
    batch = collate(docs, clips, pad_id=0, pack_length=16)
    expected = []
    for r in range(batch.student_ids.shape[0]):
        seen = []
        for d in batch.student_doc[r][batch.speech_mask[r]].tolist():
            if d not in seen:
                seen.append(d)
        expected += [int(batch.segments[d][[s.kind for s in batch.segments[d]].index("speech")].clip) for d in seen]
    assert expected == list(range(3))
    for doc, segs in enumerate(batch.segments):  # each clip is its document's audio
        clip = next(s.clip for s in segs if s.kind == "speech")
        assert float(batch.audio[clip, 0]) == float(clips[docs[doc].clips[0]][0])
    frames_per_clip = [FRAMES(int(n)) for n in batch.audio_lens]
    assert batch.clip_frames.tolist() == frames_per_clip


@pytest.mark.parametrize("segments,message", [
    ([Segment("speech", [], 0)], "empty transcript"),
    ([Segment("speech", [1], 5)], "refers to clip 5"),
    ([Segment("text", [])], "no tokens and no speech"),
    ([Segment("speech", [1], 1)], "gives no encoder frame"),
    ([Segment("text", list(range(9)))], "sequence of 9 student / 9 teacher positions exceeds the limit of 8"),
])
def test_bad_documents_are_skip_reasons(segments, message):
    with pytest.raises(SkipSample, match=message):
        make_document("utt-3", segments, [300, 50], FRAMES, pad_id=0, max_len=8)


def test_packing_uses_few_even_rows_and_is_deterministic():
    lengths = [7, 3, 9, 2, 5, 5, 1]  # 32 positions: at least 4 rows of 10
    rows = pack_rows(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(7))
    loads = [sum(lengths[i] for i in r) for r in rows]
    assert len(rows) == 4 and max(loads) <= 10 and max(loads) - min(loads) <= 2  # even: little padding
    assert rows == pack_rows(lengths, 10)
    assert len(pack_rows([6, 6, 6], 10)) == 3  # more rows than the total needs when no two documents fit together
    with pytest.raises(ValueError, match="does not fit a row of 10"):
        pack_rows([11], 10)


def test_frame_counter_refuses_clips_beyond_its_table():
    with pytest.raises(ValueError, match="longer than the longest the frame table covers"):
        FRAMES(1001)
