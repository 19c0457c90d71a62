"""Tiny random Hugging Face causal LMs saved to disk, as independent references for the Megatron model."""

from __future__ import annotations

from pathlib import Path

import torch

#: name -> (transformers class name, config kwargs). Together they cover: Llama with GQA and untied
#: embeddings; Qwen2 with QKV bias, tied embeddings and rope base 1e6; odd head/group counts (6 heads,
#: 2 KV groups, hidden 96, 3 layers).
TINY_HF_CONFIGS: dict[str, tuple[str, dict]] = {
    "llama-gqa-untied": ("LlamaForCausalLM", dict(vocab_size=320, hidden_size=64, intermediate_size=96,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2-bias-tied": ("Qwen2ForCausalLM", dict(vocab_size=320, hidden_size=64, intermediate_size=96,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                tie_word_embeddings=True, rope_theta=1e6)),
    "llama-odd-heads": ("LlamaForCausalLM", dict(vocab_size=320, hidden_size=96, intermediate_size=160,
                                                num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                                                tie_word_embeddings=True, rope_theta=1e5)),
}


def make_hf_model(name: str, seed: int = 0):
    """A randomly initialised HF model whose norms and biases are not at their defaults.

    Norm weights are 1 + 0.1·N(0,1) and biases 0.1·N(0,1), so a converter that drops either shows up
    in the logits.
    """
    import transformers

    cls_name, kwargs = TINY_HF_CONFIGS[name]
    cls = getattr(transformers, cls_name)
    config_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    torch.manual_seed(seed)
    model = cls(config_cls(**kwargs)).eval()
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "norm" in pname:
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif pname.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    return model


def save_hf_model(name: str, out: Path, seed: int = 0):
    """Save :func:`make_hf_model` as safetensors to ``out`` and return the model."""
    model = make_hf_model(name, seed)
    model.save_pretrained(str(out), safe_serialization=True)
    return model
