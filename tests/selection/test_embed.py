"""Step 1: offline MiniLM embeddings equal an independent transformers re-computation, are stored memory-mapped,
and a killed run continues from the last complete chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemo_salad.data.text_corpus import offline_text_corpus
from nemo_salad.selection.embed import embed_texts, load_embeddings
from nemo_salad.selection.encoders import HashingEncoder, SentenceTransformerEncoder, default_model_path
from tests.selection.helpers import RecordingEncoder


@pytest.fixture(scope="module")
def texts():
    return [d.text for d in offline_text_corpus(limit=96, seed=3)]


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEncoder(batch_size=32)


def _reference(texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states of the same checkpoint through plain transformers."""
    from transformers import AutoModel, AutoTokenizer

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), 50):
            batch = tokenizer(texts[lo:lo + 50], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled.double(), dim=-1).numpy())
    return np.concatenate(out)


def test_minilm_embeddings_match_reference_and_are_memory_mapped(texts, minilm, tmp_path):
    emb = embed_texts(texts, minilm, tmp_path, chunk_size=40)
    assert isinstance(emb, np.memmap) and emb.shape == (96, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.asarray(emb, np.float64), _reference(texts), atol=2e-5)
    # related texts are closer than unrelated ones (a sanity check of the model, not of the storage)
    pair = minilm.encode(["The cat sat on the mat.", "A kitten rested on the rug.", "Bond yields rose sharply."])
    assert pair[0] @ pair[1] > pair[0] @ pair[2] + 0.2
    half = embed_texts(texts[:16], minilm, tmp_path / "f16", chunk_size=8, dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(np.asarray(half, np.float32), np.asarray(emb[:16]), atol=1e-3)


def test_killed_run_resumes_from_last_complete_chunk(texts, tmp_path):
    inner = HashingEncoder(dim=64)
    full = np.asarray(embed_texts(texts, inner, tmp_path / "ref", chunk_size=20))
    dying = RecordingEncoder(inner, kill_after=None)

    class Crash(RuntimeError):
        pass

    def encode_then_crash(batch):  # third chunk fails mid-run, like a kill
        if dying.chunks == 3:
            raise Crash
        return RecordingEncoder.encode(dying, batch)

    dying.encode = encode_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        embed_texts(texts, dying, tmp_path / "run", chunk_size=20)
    with pytest.raises(FileNotFoundError, match="no complete embeddings"):
        load_embeddings(tmp_path / "run")
    again = RecordingEncoder(inner)
    resumed = embed_texts(texts, again, tmp_path / "run", chunk_size=20)
    assert again.encoded == 96 - 3 * 20  # only the chunks not on disk
    np.testing.assert_array_equal(np.asarray(resumed), full)
    # a finished run is reused without encoding; other texts start over
    idle = RecordingEncoder(inner)
    embed_texts(texts, idle, tmp_path / "run", chunk_size=20)
    assert idle.encoded == 0
    other = RecordingEncoder(inner)
    changed = embed_texts(texts[:-1] + ["something else entirely"], other, tmp_path / "run", chunk_size=20)
    assert other.encoded == 96 and not np.array_equal(np.asarray(changed), full)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        embed_texts([], HashingEncoder(), tmp_path)

    class Broken:
        name, dim = "broken", 8

        def encode(self, texts):
            return np.zeros((len(texts), 4), np.float32)

    with pytest.raises(ValueError, match=r"returned shape \(2, 4\) for 2 texts; expected \(2, 8\)"):
        embed_texts(["a", "b"], Broken(), tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SentenceTransformerEncoder(tmp_path / "no-model")
