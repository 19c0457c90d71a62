"""Tiny model configs and a tiny tokenizer built at test time from the shipped YAML groups."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "speech and text are two views of language",
    "he turned sharply and faced gregson across the table", "ever tried ever failed no matter try again",
]


def make_tokenizer(out: Path, vocab_size: int = 120) -> Path:
    """Train a small BPE (lower-case letters, ``<unk>`` otherwise) and save it as a ``transformers`` tokenizer.

    Its vocabulary (< 256) fits the ``tiny-llama`` preset.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"],
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"))
    tok.train_from_iterator(SENTENCES * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(str(out))
    return out


#: Random tiny Whisper and Mimi encoder sections (no checkpoint): ``model_cfg(..., encoder="whisper_tiny")``.
TINY_ENCODERS = {
    "whisper_tiny": {"kind": "whisper", "pretrained": None, "freeze": False, "pad_to_window": False,
                     "config": {"d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2,
                                "encoder_ffn_dim": 32, "max_source_positions": 1500}},
    "mimi_tiny": {"kind": "mimi", "pretrained": None, "freeze": False,
                  "config": {"hidden_size": 16, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 32,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "codebook_dim": 16,
                             "vector_quantization_hidden_dimension": 16, "num_quantizers": 2, "codebook_size": 16,
                             "upsample_groups": 16, "sliding_window": 8}},
}


def model_cfg(tokenizer_dir: Path | None, llm: str = "tiny", encoder: str = "fastconformer_tiny",
              adapter: str = "causal_tiny", teacher: str = "copy", **extra) -> dict:
    """A ``model`` section assembled from ``conf/model/<group>/<name>.yaml`` (or an encoder of ``TINY_ENCODERS``)."""
    load = lambda group, name: OmegaConf.to_container(OmegaConf.load(CONF / "model" / group / f"{name}.yaml"))  # noqa
    enc = copy.deepcopy(TINY_ENCODERS[encoder]) if encoder in TINY_ENCODERS else load("encoder", encoder)
    cfg = {"llm": load("llm", llm), "encoder": enc, "adapter": load("adapter", adapter),
           "teacher": load("teacher", teacher), "tokenizer": {"dir": str(tokenizer_dir) if tokenizer_dir else None}}
    for key, value in extra.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg
