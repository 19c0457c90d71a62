"""Tiny model configs and a tiny tokenizer built at test time from the shipped YAML groups."""

from __future__ import annotations

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


def model_cfg(tokenizer_dir: Path | None, llm: str = "tiny", encoder: str = "fastconformer_tiny",
              adapter: str = "causal_tiny", teacher: str = "copy", **extra) -> dict:
    """A ``model`` section assembled from ``conf/model/<group>/<name>.yaml``."""
    load = lambda group, name: OmegaConf.to_container(OmegaConf.load(CONF / "model" / group / f"{name}.yaml"))  # noqa
    cfg = {"llm": load("llm", llm), "encoder": load("encoder", encoder), "adapter": load("adapter", adapter),
           "teacher": load("teacher", teacher), "tokenizer": {"dir": str(tokenizer_dir) if tokenizer_dir else None}}
    for key, value in extra.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg
