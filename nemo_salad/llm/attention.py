"""Core attention through ``torch.nn.functional.scaled_dot_product_attention`` for megatron-core layers.

megatron-core's local ``DotProductAttention`` materialises fp32 scores with ``baddbmm`` into a global buffer
and masks them with ``-10000``; Transformer Engine's attention is GPU-only. :class:`SDPAttention` is a
drop-in ``core_attention`` module for the local layer spec that calls PyTorch's fused SDPA kernels (flash /
memory-efficient on GPU, the fused math kernel on CPU) with an arbitrary boolean mask, so padding and
interleaved speech/text layouts work identically on both devices.

Shapes (megatron's sequence-first layout): ``S`` query length, ``K`` key length, ``B`` batch, ``N`` heads
per tensor-parallel rank, ``G`` key/value groups per rank, ``D`` head width.
"""

from __future__ import annotations

import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from torch import Tensor

__all__ = ["SDPAttention"]


class SDPAttention(DotProductAttention):
    """``DotProductAttention`` with the same constructor, computed by PyTorch SDPA.

    The mask convention is megatron's: a boolean tensor broadcastable to ``(B, 1, S, K)`` where True marks
    a position that must not be attended to. ``attention_mask=None`` means plain causal attention.

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="sdpa")
    >>> type(llm.gpt.decoder.layers[0].self_attention.core_attention).__name__
    'SDPAttention'
    """

    def forward(  # type: ignore[override]
        self,
        query: Tensor,  # (S, B, N, D)
        key: Tensor,  # (K, B, G, D)
        value: Tensor,  # (K, B, G, D)
        attention_mask: Tensor | None,  # (B or 1, 1, S, K) bool, True = masked
        attn_mask_type=None,
        attention_bias: Tensor | None = None,
        packed_seq_params=None,
    ) -> Tensor:
        """Attend and return the context ``(S, B, N*D)``.

        Raises:
            NotImplementedError: for packed sequences or an additive attention bias.
        """
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention supports neither packed sequences nor attention_bias")
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        q = query.permute(1, 2, 0, 3)  # (B, N, S, D)
        k = key.permute(1, 2, 0, 3)  # (B, G, K, D)
        v = value.permute(1, 2, 0, 3)
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)  # (B, N, K, D)
            v = v.repeat_interleave(groups, dim=1)
        dropout = self.attention_dropout.p if self.training else 0.0
        if attention_mask is None:
            causal = q.shape[2] > 1
            ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal,
                                                 scale=self.softmax_scale)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=~attention_mask, dropout_p=dropout,
                                                 scale=self.softmax_scale)
        # (B, N, S, D) -> (S, B, N*D)
        return ctx.permute(2, 0, 1, 3).reshape(ctx.shape[2], ctx.shape[0], self.hidden_size_per_partition)
