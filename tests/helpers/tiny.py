"""Tiny model configs and a tiny tokenizer built at test time from the shipped YAML groups."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import OmegaConf

from nemo_salad.recipes.bench import make_tokenizer

__all__ = ["CONF", "TINY_ENCODERS", "make_tokenizer", "model_cfg"]

CONF = Path(__file__).resolve().parents[2] / "conf"

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
