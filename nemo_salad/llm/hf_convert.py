"""Hugging Face ⇄ megatron-core weight conversion for Llama, Qwen2 and SmolLM2 (local layer spec).

Why a converter of our own rather than NeMo-2's ``llm.import_ckpt`` / ``HFLlamaImporter``: on a machine
without Transformer Engine those importers map weights by TE parameter names
(``linear_qkv.layer_norm_weight``), which do not exist in the local layer spec; they then only log
"No matches found" and leave every RMSNorm at 1.0 (logit error 0.25–0.49 measured). They also need a
trainer, checkpoint I/O and several CUDA patches on CPU, always untie Qwen2 embeddings, and the NeMo-2
``llm`` collection is gone in NeMo 3 (its successor, megatron-bridge, needs Transformer Engine). The
mapping itself is small and is checked by logit-parity tests against ``transformers``.

Mapping (``L`` = layer index, megatron names relative to ``GPTModel``):

=============================================  ====================================================
Hugging Face                                   megatron-core (local spec)
=============================================  ====================================================
model.embed_tokens.weight                      embedding.word_embeddings.weight
model.layers.L.input_layernorm.weight          decoder.layers.L.input_layernorm.weight
model.layers.L.self_attn.{q,k,v}_proj.{w,b}    decoder.layers.L.self_attention.linear_qkv.{w,b}  (*)
model.layers.L.self_attn.o_proj.weight         decoder.layers.L.self_attention.linear_proj.weight
model.layers.L.post_attention_layernorm.weight decoder.layers.L.pre_mlp_layernorm.weight
model.layers.L.mlp.{gate,up}_proj.weight       decoder.layers.L.mlp.linear_fc1.weight = [gate; up]
model.layers.L.mlp.down_proj.weight            decoder.layers.L.mlp.linear_fc2.weight
model.norm.weight                              decoder.final_layernorm.weight
lm_head.weight (untied only)                   output_layer.weight
=============================================  ====================================================

(*) megatron stores QKV grouped per key/value head: for each group ``g`` the rows of its query heads,
then ``k_g``, then ``v_g``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from nemo_salad.llm.config import LLMConfig
from nemo_salad.llm.hf_checkpoint import CheckpointError, read_hf_checkpoint, write_hf_checkpoint

__all__ = ["export_hf", "hf_to_megatron", "load_hf", "megatron_to_hf"]

_IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


def _layer_pairs(layer: int) -> list[tuple[str, str]]:
    """(HF name, megatron name) for the tensors that map one-to-one in ``layer``."""
    hf, mc = f"model.layers.{layer}.", f"decoder.layers.{layer}."
    return [
        (hf + "input_layernorm.weight", mc + "input_layernorm.weight"),
        (hf + "self_attn.o_proj.weight", mc + "self_attention.linear_proj.weight"),
        (hf + "post_attention_layernorm.weight", mc + "pre_mlp_layernorm.weight"),
        (hf + "mlp.down_proj.weight", mc + "mlp.linear_fc2.weight"),
    ]


def expected_hf_shapes(cfg: LLMConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of ``cfg`` holds, with its shape."""
    h, d, f = cfg.hidden_size, cfg.kv_channels, cfg.ffn_hidden_size
    q, kv = cfg.num_attention_heads * d, cfg.num_query_groups * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    for layer in range(cfg.num_layers):
        p = f"model.layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
        })
        if cfg.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
    return shapes


def _check_hf_state(cfg: LLMConfig, state: dict[str, Tensor], origin: dict[str, Path] | None, source: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and wrongly shaped tensors."""
    expected = expected_hf_shapes(cfg)
    where = (lambda k: str(origin.get(k, source))) if origin else (lambda k: source)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected)
                        if not k.endswith(_IGNORED_HF_SUFFIXES) and not (k == "lm_head.weight" and cfg.tie_embeddings))
    wrong = [f"{k} in {where(k)}: found {tuple(state[k].shape)}, expected {expected[k]}"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    if wrong:
        problems.append("shape mismatch (config.json vs weights): " + "; ".join(wrong[:8])
                        + (f"; … {len(wrong) - 8} more" if len(wrong) > 8 else ""))
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:5]}")
    if cfg.tie_embeddings and "lm_head.weight" in state and "model.embed_tokens.weight" in state:
        if not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
            problems.append("tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the {cfg.family} config: " + " | ".join(problems))


def hf_to_megatron(cfg: LLMConfig, hf_state: dict[str, Tensor], source: str = "<state dict>",
                   origin: dict[str, Path] | None = None) -> dict[str, Tensor]:
    """Convert a Hugging Face state dict to megatron-core ``GPTModel`` names.

    Args:
        cfg (LLMConfig): architecture (e.g. from :meth:`LLMConfig.from_hf`).
        hf_state (dict): Hugging Face tensors.
        source (str): checkpoint name for error messages.
        origin (dict | None): tensor name → file, for error messages.

    Returns:
        dict: megatron state dict (no ``_extra_state`` entries).

    Raises:
        CheckpointError: if tensors are missing, unexpected or of the wrong shape for ``cfg``.
    """
    _check_hf_state(cfg, hf_state, origin, source)
    groups, d = cfg.num_query_groups, cfg.kv_channels
    per_group = cfg.num_attention_heads // groups
    out = {"embedding.word_embeddings.weight": hf_state["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": hf_state["model.norm.weight"]}
    if not cfg.tie_embeddings:
        out["output_layer.weight"] = hf_state["lm_head.weight"]
    for layer in range(cfg.num_layers):
        for hf_name, mc_name in _layer_pairs(layer):
            out[mc_name] = hf_state[hf_name]
        attn, mc = f"model.layers.{layer}.self_attn.", f"decoder.layers.{layer}."
        for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            q, k, v = (hf_state[f"{attn}{p}_proj.{kind}"] for p in "qkv")
            tail = q.shape[1:]  # (H,) for weights, () for biases
            qkv = torch.cat([q.reshape(groups, per_group * d, *tail), k.reshape(groups, d, *tail),
                             v.reshape(groups, d, *tail)], dim=1)
            out[f"{mc}self_attention.linear_qkv.{kind}"] = qkv.reshape(-1, *tail)
        mlp = f"model.layers.{layer}.mlp."
        out[f"{mc}mlp.linear_fc1.weight"] = torch.cat([hf_state[mlp + "gate_proj.weight"],
                                                       hf_state[mlp + "up_proj.weight"]], dim=0)
    return out


def megatron_to_hf(cfg: LLMConfig, mc_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Convert megatron-core ``GPTModel`` tensors back to Hugging Face names (inverse of :func:`hf_to_megatron`).

    ``_extra_state`` entries are ignored. A tied model gets no ``lm_head.weight`` (as ``save_pretrained``).
    """
    mc_state = {k: v for k, v in mc_state.items() if not k.endswith("_extra_state")}
    groups, d = cfg.num_query_groups, cfg.kv_channels
    per_group = cfg.num_attention_heads // groups
    out = {"model.embed_tokens.weight": mc_state["embedding.word_embeddings.weight"],
           "model.norm.weight": mc_state["decoder.final_layernorm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = mc_state["output_layer.weight"]
    for layer in range(cfg.num_layers):
        for hf_name, mc_name in _layer_pairs(layer):
            out[hf_name] = mc_state[mc_name]
        attn, mc = f"model.layers.{layer}.self_attn.", f"decoder.layers.{layer}."
        for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            qkv = mc_state[f"{mc}self_attention.linear_qkv.{kind}"]
            tail = qkv.shape[1:]
            q, k, v = qkv.reshape(groups, (per_group + 2) * d, *tail).split([per_group * d, d, d], dim=1)
            out[f"{attn}q_proj.{kind}"] = q.reshape(-1, *tail)
            out[f"{attn}k_proj.{kind}"] = k.reshape(-1, *tail)
            out[f"{attn}v_proj.{kind}"] = v.reshape(-1, *tail)
        gate, up = mc_state[f"{mc}mlp.linear_fc1.weight"].chunk(2, dim=0)
        out[f"model.layers.{layer}.mlp.gate_proj.weight"] = gate
        out[f"model.layers.{layer}.mlp.up_proj.weight"] = up
    return {k: v.contiguous() for k, v in out.items()}


def load_hf(path: str | Path, **llm_kwargs):
    """Build a :class:`~nemo_salad.llm.MegatronLLM` from a Hugging Face directory and load its weights.

    Args:
        path (str | Path): directory with ``config.json`` and safetensors / ``.bin`` weights.
        **llm_kwargs: passed to :class:`~nemo_salad.llm.MegatronLLM` (``attention``, TransformerConfig
            overrides such as ``params_dtype`` for bf16 weights).

    Returns:
        MegatronLLM: the model, in eval mode.

    Raises:
        CheckpointError: missing/corrupt files, or weights that do not fit the config.
        UnsupportedModelError: an architecture or option the Megatron model cannot represent.
    """
    from nemo_salad.llm.model import MegatronLLM

    hf_cfg, hf_state, origin = read_hf_checkpoint(path)
    cfg = LLMConfig.from_hf(hf_cfg, source=str(Path(path) / "config.json"))
    mc_state = hf_to_megatron(cfg, hf_state, source=str(path), origin=origin)
    llm = MegatronLLM(cfg, **llm_kwargs)
    load_megatron_state(llm, mc_state, source=str(path))
    return llm.eval()


def load_megatron_state(llm, mc_state: dict[str, Tensor], source: str = "<state dict>") -> None:
    """Copy full (unsharded) megatron tensors into ``llm.gpt`` (this rank's shard under tensor parallelism);
    every parameter must be covered exactly.

    Raises:
        CheckpointError: on missing or unexpected parameters.
    """
    from nemo_salad.llm.tensor_parallel import shard_full_state

    mc_state = shard_full_state(llm.gpt, mc_state, llm.cfg.num_query_groups)
    result = llm.gpt.load_state_dict(mc_state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{source}: megatron state does not fit the model: missing={missing[:5]} "
                              f"unexpected={list(result.unexpected_keys)[:5]}")


def export_hf(llm, out_dir: str | Path, copy_tokenizer_from: str | Path | None = None) -> Path:
    """Write ``llm`` as a Hugging Face directory that ``transformers`` loads with the same logits."""
    mc_state = {k: v for k, v in llm.gpt.state_dict().items()}
    return write_hf_checkpoint(out_dir, llm.cfg.to_hf(), megatron_to_hf(llm.cfg, mc_state), copy_tokenizer_from)
