"""A megatron-core GPT decoder for the Llama/Qwen2 family, fed token ids or embeddings.

:class:`MegatronLLM` owns a megatron-core ``GPTModel`` (built with the local layer spec, so it runs without
Transformer Engine) and exposes what speech adaptation needs:

* :meth:`MegatronLLM.embed` — token embeddings, to splice speech frames between them;
* :meth:`MegatronLLM.hidden_states` — final-norm hidden states from ids *or* ``inputs_embeds`` with an
  explicit padding mask, so losses can project to the vocabulary chunk by chunk;
* :meth:`MegatronLLM.logits` / ``forward`` — vocabulary logits.

Tensors are batch-first at this interface and sequence-first inside megatron. Legend: ``B`` batch,
``T`` sequence length, ``H`` hidden size, ``V`` vocabulary size (per tensor-parallel rank unless gathered).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from nemo_salad.llm.config import LLMConfig
from nemo_salad.llm.cpu import ensure_cpu_support
from nemo_salad.llm.parallel import init_model_parallel, model_parallel_ready

__all__ = ["MegatronLLM", "attention_mask_from_padding", "build_gpt_model"]

AttentionImpl = Literal["sdpa", "local"]


def build_gpt_model(cfg: LLMConfig, attention: AttentionImpl = "sdpa", parallel_output: bool = False,
                    **transformer_overrides: Any):
    """Build a megatron-core ``GPTModel`` with the local layer spec for ``cfg``.

    Args:
        cfg (LLMConfig): the architecture.
        attention (str): ``"sdpa"`` (PyTorch fused attention, :class:`~nemo_salad.llm.attention.SDPAttention`)
            or ``"local"`` (megatron-core's ``DotProductAttention``). Default: "sdpa".
        parallel_output (bool): keep logits split over tensor-parallel ranks (the losses work on the shards).
            Default: False.
        **transformer_overrides: passed to :meth:`LLMConfig.transformer_config`.

    Returns:
        megatron.core.models.gpt.GPTModel
    """
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from nemo_salad.llm.attention import SDPAttention

    if attention not in ("sdpa", "local"):
        raise ValueError(f"attention={attention!r}; expected 'sdpa' or 'local'")
    ensure_cpu_support()
    if not model_parallel_ready():
        init_model_parallel()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if attention == "sdpa":
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return GPTModel(
        config=cfg.transformer_config(**transformer_overrides),
        transformer_layer_spec=spec,
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        parallel_output=parallel_output,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=cfg.rope_base,
        rope_scaling=cfg.rope_scaling_factor is not None,
        rope_scaling_factor=cfg.rope_scaling_factor or 8.0,
    )


def attention_mask_from_padding(padding_mask: Tensor | None, seq_len: int, device: torch.device | None = None
                                ) -> Tensor:
    """Causal + key-padding mask in megatron's convention (True = may not attend).

    Every position may attend to itself, so the rows of padding positions are never fully masked (a fully
    masked row would turn into NaN in fused attention and leak through ``0 * NaN``); valid positions never
    attend to padding.

    Args:
        padding_mask (Tensor | None): ``(B, T)``, True/1 for real tokens; None means no padding.
        seq_len (int): T.
        device (torch.device | None): device of the mask when ``padding_mask`` is None.

    Returns:
        Tensor: boolean ``(B, 1, T, T)`` (or ``(1, 1, T, T)`` without padding).

    >>> m = attention_mask_from_padding(torch.tensor([[0, 1, 1]]), 3)
    >>> m[0, 0].int().tolist()
    [[0, 1, 1], [1, 0, 1], [1, 0, 0]]
    """
    dev = padding_mask.device if padding_mask is not None else device
    future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=dev).triu(1)  # (T, T)
    if padding_mask is None:
        return future[None, None]
    if padding_mask.shape[-1] != seq_len:
        raise ValueError(f"padding mask has length {padding_mask.shape[-1]}, sequence has {seq_len}")
    masked = future[None] | ~padding_mask.bool()[:, None, :]  # (B, T, T)
    masked &= ~torch.eye(seq_len, dtype=torch.bool, device=dev)[None]
    return masked[:, None]


class MegatronLLM(nn.Module):
    """A Llama/Qwen2 decoder on megatron-core, batch-first at its interface.

    Args:
        cfg (LLMConfig): the architecture.
        attention (str): core attention implementation, see :func:`build_gpt_model`. Default: "sdpa".
        **transformer_overrides: megatron ``TransformerConfig`` overrides (parallel sizes, precision).

    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama"))
    >>> ids = torch.randint(0, 256, (2, 5))
    >>> llm(input_ids=ids).shape
    torch.Size([2, 5, 256])
    >>> torch.equal(llm(inputs_embeds=llm.embed(ids)), llm(input_ids=ids))
    True
    """

    def __init__(self, cfg: LLMConfig, attention: AttentionImpl = "sdpa", parallel_output: bool = False,
                 **transformer_overrides: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.parallel_output = parallel_output
        self.gpt = build_gpt_model(cfg, attention=attention, parallel_output=parallel_output, **transformer_overrides)

    @property
    def tp_group(self) -> Any:
        """The tensor-parallel group when this model's vocabulary is sharded over several ranks, else None."""
        from megatron.core import parallel_state

        if parallel_state.get_tensor_model_parallel_world_size() == 1:
            return None
        return parallel_state.get_tensor_model_parallel_group()

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def output_weight(self) -> Tensor:
        """The ``(V, H)`` output projection (the input embedding when tied)."""
        return self.gpt.shared_embedding_or_output_weight() if self.cfg.tie_embeddings else self.gpt.output_layer.weight

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None
                           ) -> dict[str, Any]:
        """megatron-core's sharded state dict of the decoder (keys under ``{prefix}gpt.``), for distributed
        checkpoints that load at any tensor-parallel size."""
        return self.gpt.sharded_state_dict(prefix=f"{prefix}gpt.", sharded_offsets=sharded_offsets, metadata=metadata)

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings ``(B, T) -> (B, T, H)``, exactly what the model adds for ``input_ids``."""
        return self.gpt.embedding.word_embeddings(input_ids)

    def hidden_states(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                      padding_mask: Tensor | None = None, attention_mask: Tensor | None = None,
                      position_ids: Tensor | None = None) -> Tensor:
        """Run the decoder; return the final-normed hidden states.

        Args:
            input_ids (Tensor | None): ``(B, T)`` token ids.
            inputs_embeds (Tensor | None): ``(B, T, H)`` embeddings instead of ids (e.g. speech spliced in).
            padding_mask (Tensor | None): ``(B, T)`` True/1 at real positions. Left or right padding both work:
                RoPE is relative, so masked padding does not change the scores among real positions.
            attention_mask (Tensor | None): a full megatron mask ``(B|1, 1, T, T)`` (True = masked) instead
                of ``padding_mask`` — e.g. several continuations that share one context in a single row.
            position_ids (Tensor | None): ``(B, T)`` RoPE positions; None means ``0 .. T-1``. With a custom
                ``attention_mask`` this lets continuations restart at the position after their shared context.

        Returns:
            Tensor: ``(B, T, H)``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if attention_mask is not None and padding_mask is not None:
            raise ValueError("pass padding_mask or attention_mask, not both")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        if x.dim() != 3 or x.shape[-1] != self.cfg.hidden_size:
            raise ValueError(f"inputs_embeds must be (B, T, {self.cfg.hidden_size}), got {tuple(x.shape)}")
        seq_len = x.shape[1]
        if seq_len > self.cfg.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds the LLM context "
                             f"max_position_embeddings={self.cfg.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = attention_mask_from_padding(padding_mask, seq_len, device=x.device)
        decoder_input = x.transpose(0, 1).contiguous()  # (T, B, H)
        rope = self.gpt.rotary_pos_emb
        if position_ids is None:
            rope_len = rope.get_rotary_seq_len(None, self.gpt.decoder, decoder_input, self.gpt.config, None)
            rotary = rope(rope_len)  # (T, 1, 1, D)
        else:
            if position_ids.shape != x.shape[:2]:
                raise ValueError(f"position_ids must be (B, T) = {tuple(x.shape[:2])}, got {tuple(position_ids.shape)}")
            table = rope(int(position_ids.max()) + 1)  # (P, 1, 1, D)
            rotary = table[position_ids.t()].squeeze(2)  # (T, B, 1, D)
        hidden = self.gpt.decoder(hidden_states=decoder_input, attention_mask=attention_mask,
                                  rotary_pos_emb=rotary)  # (T, B, H)
        return hidden.transpose(0, 1)

    def logits(self, hidden: Tensor) -> Tensor:
        """Project hidden states ``(B, T, H)`` (or any ``(..., H)``) to vocabulary logits ``(..., V)``."""
        weight = self.gpt.shared_embedding_or_output_weight() if self.cfg.tie_embeddings else None
        out, _ = self.gpt.output_layer(hidden, weight=weight)
        return out

    def forward(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                padding_mask: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        """Logits ``(B, T, V)``; arguments as :meth:`hidden_states`."""
        return self.logits(self.hidden_states(input_ids, inputs_embeds, padding_mask, attention_mask, position_ids))
