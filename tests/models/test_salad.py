"""SaladModel with each speech encoder (FastConformer, Whisper, Mimi; tiny, random): speech slots and the index map,
padding and packing, frame counts, training and validation steps, gradients and frozen parts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemo_salad.data.batch import SkipSample, collate, make_document
from nemo_salad.models.inference import ClipFeatureCache
from nemo_salad.models.salad import SaladModel
from nemo_salad.parts.audio_checks import BadSampleError
from tests.helpers.batches import identity_speech, make_batch, make_documents
from tests.helpers.tiny import model_cfg

ENCODERS = ["fastconformer_tiny", "whisper_tiny", "mimi_tiny"]


@pytest.fixture(scope="module", params=ENCODERS)
def model(tiny_tokenizer_dir, request):
    torch.manual_seed(0)
    return SaladModel(model_cfg(tiny_tokenizer_dir, encoder=request.param)).eval()


def _aligned_logits(model, batch, speech=None):
    student = model.llm.logits(model.student_hidden(batch, speech).flatten(0, 1)[batch.student_pos])  # (P, V)
    teacher = model.teacher_logits(model.teacher_hidden(batch).flatten(0, 1)[batch.teacher_pos])
    return student, teacher


@pytest.mark.parametrize("layout", ["prefix", "interleaved"])
@pytest.mark.parametrize("pack_length", [None, 64], ids=["one-per-row", "packed"])
def test_identity_path_student_equals_teacher(model, layout, pack_length):
    batch = make_batch(model, layout, identity=True, pack_length=pack_length)
    with torch.no_grad():
        student, teacher = _aligned_logits(model, batch, speech=identity_speech(model, batch))
        n_text = sum(len(s.ids) for segs in batch.segments for s in segs if s.kind == "text")
        n_first = sum(segs[0].kind == "text" for segs in batch.segments)
        assert batch.num_targets == n_text - n_first  # every text token with something before it is compared
        assert torch.allclose(student, teacher, atol=1e-5), (student - teacher).abs().max()
    if pack_length:
        assert batch.student_ids.shape[0] < batch.num_samples  # several documents share a row


def test_real_speech_changes_the_student(model):
    """Control for the identity test: with encoder frames instead of transcript embeddings they differ."""
    batch = make_batch(model, "interleaved")
    with torch.no_grad():
        student, teacher = _aligned_logits(model, batch)
    assert not torch.allclose(student, teacher, atol=1e-3)


@pytest.mark.parametrize("pack_length", [None, 256], ids=["one-per-row", "packed"])
def test_index_map_with_encoder_frames(model, pack_length):
    batch = make_batch(model, "interleaved", pack_length=pack_length)
    with torch.no_grad():
        _, frame_lens = model.perceive(batch.audio, batch.audio_lens)
    assert torch.equal(batch.student_ids.flatten()[batch.student_pos + 1], batch.targets)
    assert torch.equal(batch.teacher_ids.flatten()[batch.teacher_pos + 1], batch.targets)
    s_doc, t_doc = batch.student_doc.flatten(), batch.teacher_doc.flatten()
    assert torch.equal(s_doc[batch.student_pos], t_doc[batch.teacher_pos])  # pairs stay inside one document
    assert torch.equal(s_doc[batch.student_pos + 1], s_doc[batch.student_pos])
    assert not batch.speech_mask.flatten()[batch.student_pos + 1].any()  # the predicted position is text
    assert int(batch.speech_mask.sum()) == int(frame_lens.sum())
    assert torch.equal(frame_lens.long(), batch.clip_frames)
    assert torch.equal(frame_lens.long(), model.encoder.encoded_lengths(batch.audio_lens))  # adapter keeps F
    assert not (batch.speech_mask & ~batch.student_mask).any()
    # the first text token after each speech span is predicted from the last speech frame
    after_speech = batch.speech_mask.flatten()[batch.student_pos]
    assert int(after_speech.sum()) == sum(1 for segs in batch.segments for j, s in enumerate(segs[:-1])
                                          if s.kind == "speech")


@pytest.mark.parametrize("layout", ["prefix", "interleaved"])
@pytest.mark.parametrize("pack_length", [None, 256], ids=["one-per-row", "packed"])
def test_padding_and_packing_are_exact(model, layout, pack_length):
    """Each document's student hidden states, teacher hidden states and loss terms are the same alone and inside a
    padded or packed batch (interleaved: several clips per document)."""
    docs, clips = make_documents(model, layout)
    batch = collate(docs, clips, model.pad_id, pack_length)
    with torch.no_grad():
        student, teacher = model.student_hidden(batch), model.teacher_hidden(batch)
        s_logits, t_logits = _aligned_logits(model, batch)
        for k, doc in enumerate(docs):
            alone = collate([doc], clips, model.pad_id)
            s_rows = batch.student_doc == k
            assert torch.allclose(student[s_rows], model.student_hidden(alone)[0], atol=1e-5)
            assert torch.allclose(teacher[batch.teacher_doc == k], model.teacher_hidden(alone)[0], atol=1e-5)
            a_student, a_teacher = _aligned_logits(model, alone)
            mine = batch.sample_index == k
            assert torch.allclose(s_logits[mine], a_student, atol=1e-4)
            assert torch.allclose(t_logits[mine], a_teacher, atol=1e-4)
        one_per_row = collate(docs, clips, model.pad_id)
        assert model.compute_loss(batch).loss.item() == pytest.approx(model.compute_loss(one_per_row).loss.item(),
                                                                      rel=1e-5)
    if pack_length:
        assert batch.student_ids.shape[0] < len(docs)


def _kl_loss(model, batch):
    student, teacher = _aligned_logits(model, batch)
    return torch.nn.functional.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True,
                                      reduction="batchmean")


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen-encoder-and-llm"])
def test_gradients_and_frozen_parts(tiny_tokenizer_dir, frozen, encoder):
    torch.manual_seed(1)
    cfg = model_cfg(tiny_tokenizer_dir, encoder=encoder, **{"encoder.freeze": frozen, "llm.freeze": frozen})
    model = SaladModel(cfg).train()
    before = {name: _snapshot(getattr(model, name)) for name in ("encoder", "adapter", "llm", "teacher")}
    batch = make_batch(model, "interleaved")
    _kl_loss(model, batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.encoder.training != frozen  # a frozen encoder stays in eval mode
    enc_grads = [p.grad for p in model.encoder.parameters()]
    if frozen:
        assert all(g is None for g in enc_grads) and all(p.grad is None for p in model.llm.parameters())
    else:
        assert sum(int(g is not None and g.abs().sum() > 0) for g in enc_grads) > 0.9 * len(enc_grads)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    after = {name: _snapshot(getattr(model, name)) for name in before}
    changed = {name: any(not torch.equal(before[name][k], after[name][k]) for k in before[name]) for name in before}
    assert changed["adapter"] and not changed["teacher"]
    assert changed["encoder"] != frozen and changed["llm"] != frozen  # incl. BatchNorm running statistics


def test_paper_adapter_has_about_122m_parameters():
    from omegaconf import OmegaConf

    from nemo_salad.parts.safe_config import safe_instantiate
    from tests.helpers.tiny import CONF

    cfg = OmegaConf.load(CONF / "model" / "adapter" / "paper.yaml")
    adapter = safe_instantiate(cfg, in_dim=512, out_dim=2048)  # FastConformer-large width -> Qwen2.5-3B width
    n = sum(p.numel() for p in adapter.parameters())
    w, f, d = 960, 2560, 64  # independent count: q(15 heads) + kv(2x5 heads) + o + SwiGLU + 2 norms, 12 layers
    per_layer = w * (15 + 10) * d + 15 * d * w + 3 * w * f + 2 * w
    assert n == 12 * per_layer + w + (512 * w + w) + (w * 2048 + 2048)
    assert abs(n - 122e6) / 122e6 < 0.05, n


def test_generate_is_greedy_decoding(model):
    audio = [0.1 * torch.randn(12000, generator=torch.Generator().manual_seed(3)).numpy()]
    text = model.generate(audio, prompt=" the", max_new_tokens=5)
    with torch.no_grad():  # reference: the same loop written out
        frames, lens = model.perceive(torch.as_tensor(audio[0])[None], torch.tensor([12000]))
        prompt = torch.tensor(model.tokenizer(" the", add_special_tokens=False).input_ids)
        x = torch.cat([frames[0, : int(lens[0])], model.llm.embed(prompt)])[None]
        out = []
        for _ in range(5):
            nxt = model.llm(inputs_embeds=x)[0, -1].argmax()
            out.append(int(nxt))
            x = torch.cat([x, model.llm.embed(nxt.view(1, 1))], dim=1)
    eos = model.tokenizer.eos_token_id
    assert text == [model.tokenizer.decode(out[: out.index(eos)] if eos in out else out)]


@pytest.mark.parametrize("audio,rate,expected", [
    (np.zeros(0, np.float32), 16000, "audio is empty"),
    (None, 16000, "shorter than one encoder frame"),  # one sample fewer than the encoder's min_audio_samples
    (np.zeros(16000, np.float32), 8000, "sample rate is 8000 Hz, expected 16000 Hz"),
    (np.zeros((2, 16000), np.float32), 16000, "2 channels, expected mono"),
])
def test_bad_audio_names_the_sample(model, audio, rate, expected):
    if audio is None:
        if model.min_audio_samples <= 1:
            pytest.skip("every non-empty clip gives a frame (Mimi pads clips to whole frames)")
        audio = np.zeros(model.min_audio_samples - 1, np.float32)
    with pytest.raises(BadSampleError, match=rf"sample 'clip-7': .*{expected}"):
        if rate == 16000:  # the bad sample is found among good ones
            model.generate([np.zeros(16000, np.float32), audio], sample_rate=rate, ids=["ok", "clip-7"])
        else:
            model.generate([audio], sample_rate=rate, ids=["clip-7"])


def test_too_long_sequence_is_a_skip_reason(model):
    """The context check is the data pipeline's (make_document): a sample longer than the LLM context is refused
    with the lengths, and the model never sees it."""
    docs, clips = make_documents(model, "prefix")
    long_ids = [5] * (model.llm.cfg.max_position_embeddings + 1)
    segments = docs[1].segments[:-1] + [type(docs[1].segments[-1])("text", long_ids)]
    with pytest.raises(SkipSample, match=r"sequence of \d+ student / \d+ teacher positions exceeds the limit of"):
        make_document("s1", segments, [len(c) for c in clips], model.frame_counter(5.0), model.pad_id,
                      model.context_length)


def test_frame_counter_mismatch_is_a_clear_error(model):
    batch = make_batch(model, "interleaved")
    batch.clip_frames = batch.clip_frames + 1
    with pytest.raises(RuntimeError, match="FrameCounter does not match this encoder"):
        model.student_hidden(batch)


def test_frame_count_formula_is_what_the_encoder_produces(model):
    """``encoded_lengths`` (spans are checked with it) and ``min_audio_samples`` (data filtering) agree with a
    forward pass of the encoder."""
    m = model.min_audio_samples
    n = torch.tensor([m, m + 1, 999, 1920, 12345, 16000, 40000])
    with torch.no_grad():
        feats, lens = model.encoder(0.1 * torch.randn(len(n), int(n.max())), n)
    assert torch.equal(model.encoder.encoded_lengths(n), lens.long()) and (lens >= 1).all()
    assert feats.shape[1] == int(lens.max())
    if m > 1:
        assert int(model.encoder.encoded_lengths(torch.tensor([m - 1]))) == 0


def test_training_and_validation_steps(model):
    """``training_step``'s loss reaches the adapter and the encoder; ``validation_step`` gives a finite loss."""
    batch = make_batch(model, "interleaved")
    saved = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}  # BatchNorm
    model.train()
    try:
        loss = model.training_step(batch, 0)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
        enc = [p for p in model.encoder.parameters() if p.requires_grad]
        assert sum(int(p.grad is not None and p.grad.abs().sum() > 0) for p in enc) > 0.9 * len(enc)
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        model.eval()
    with torch.no_grad():
        val = model.validation_step(batch, 0)
    assert torch.isfinite(val) and float(val) > 0


def test_frozen_whisper_clip_features_are_cached_exactly(tiny_tokenizer_dir, tmp_path):
    """encode_cuts of a frozen Whisper encoder encodes a clip once; the cached path equals encoding each clip
    alone through perceive (a trainable encoder is never cached)."""
    import soundfile as sf
    from lhotse import MonoCut, Recording

    from nemo_salad.models.inference import audio_batch

    torch.manual_seed(0)
    cuts = []
    for i, seconds in enumerate([0.7, 1.9, 1.2]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, np.random.default_rng(i).uniform(-0.3, 0.3, int(16000 * seconds)).astype(np.float32), 16000)
        rec = Recording.from_file(path, recording_id=f"c{i}")
        cuts.append(MonoCut(f"c{i}", 0.0, rec.duration, 0, recording=rec))
    for frozen in (True, False):
        model = SaladModel(model_cfg(tiny_tokenizer_dir, encoder="whisper_tiny", **{"encoder.freeze": frozen})).eval()
        calls = []
        model.encoder.register_forward_hook(lambda mod, args, out, calls=calls: calls.append(args[1].tolist()))
        first = model.encode_cuts(cuts[:2])
        again = model.encode_cuts(cuts[::-1])  # c2 is new; c1 and c0 come from the cache when frozen
        assert calls == ([[11200, 30400], [19200]] if frozen else [[11200, 30400], [19200, 30400, 11200]])
        with torch.no_grad():
            alone = [model.perceive(*audio_batch(model, [c.load_audio()[0]], [16000], [c.id]))[0][0] for c in cuts]
        for got, ref in zip(first + again, [alone[0], alone[1], alone[2], alone[1], alone[0]], strict=True):
            assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
        if frozen:  # a cache that holds one clip: c1 of the call evicts its hit c0, which must still be used
            key0 = ClipFeatureCache.key(cuts[0])
            feats0 = model.clip_features.get(key0)
            model.clip_features = ClipFeatureCache(max_bytes=feats0.numel() * feats0.element_size())
            model.clip_features.put(key0, feats0)
            small = model.encode_cuts([cuts[0], cuts[1]])
            assert calls[-1] == [30400] and key0 not in model.clip_features
            assert torch.allclose(small[0], alone[0], atol=1e-5) and torch.allclose(small[1], alone[1], atol=1e-5)


def test_a_bad_sample_is_skipped_once_and_counted_once(tiny_tokenizer_dir, tmp_path, caplog):
    """Every check is the data pipeline's: an unreadable clip and a sample longer than the context are skipped
    once there (one log line each), and the training step counts each once and uses every sample it gets."""
    import logging

    from lhotse import CutSet

    from nemo_salad.data.dataset import SaladDataset
    from nemo_salad.data.layout import LayoutConfig
    from nemo_salad.data.replay import text_cuts_for_replay
    from tests.helpers.tone_speech import random_sentences, tone_cuts

    torch.manual_seed(0)
    model = SaladModel(model_cfg(tiny_tokenizer_dir)).train()
    cuts = list(tone_cuts(random_sentences(4, seed=5), tmp_path))
    (tmp_path / "utt1.flac").unlink()
    cuts += list(text_cuts_for_replay([("r-long", "word " * 400), ("r-ok", "a dog ran in the park")]))
    dataset = SaladDataset(model.tokenizer, LayoutConfig(kind="prefix"), frames=model.frame_counter(40.0),
                           pad_id=model.pad_id, max_len=200, max_text_tokens=1000)
    with caplog.at_level(logging.WARNING):
        batch = dataset[CutSet.from_cuts(cuts)]
        loss = model.training_step(batch, 0)
    assert sorted(cut_id for cut_id, _ in batch.skipped) == ["r-long", "utt1"]
    assert "exceeds the limit of 200" in dict(batch.skipped)["r-long"]
    assert [r.getMessage().count("skipping cut") for r in caplog.records if "skipping" in r.getMessage()] == [1, 1]
    assert model.data_skipped == {"unreadable_audio": 1, "too_long_sequence": 1} and torch.isfinite(loss)
    assert batch.sample_ids == ["utt0", "utt2", "utt3", "r-ok"]
    assert sorted(set(batch.sample_index.tolist())) == [0, 1, 2, 3]  # the model compares every sample it got
