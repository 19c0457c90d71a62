"""Modality adapters: encoder features ``(B, F, D_in)`` → LLM input embeddings ``(B, F', H)``.

Three families, chosen by config (``_target_``):

* :class:`CausalTransformerAdapter` — the paper's adapter: a stack of causal decoder layers (paper: 12 layers,
  width 960, MLP 2560, 15 heads, 5 KV heads, ~122M parameters) between an input and an output projection.
  The layers are megatron-core transformer layers (RMSNorm, SwiGLU, RoPE, GQA), so the adapter runs on the
  same engine as the LLM.
* :class:`MLPAdapter` — a light projector: stack ``k`` adjacent frames, then Linear-GELU-Linear.
* :class:`ConformerAdapter` — NeMo Conformer layers followed by a projection.

Every adapter can downsample in time by stacking ``downsample`` adjacent frames first
(:func:`stack_frames`). All share ``forward(x, lens) -> (y, lens)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CausalTransformerAdapter", "ConformerAdapter", "MLPAdapter", "frame_mask", "stack_frames"]


def stack_frames(x: Tensor, lens: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Concatenate each run of ``k`` frames: ``(B, F, D) → (B, ceil(F/k), k·D)``; lengths ``ceil(len/k)``.

    The last group of a sequence is zero-padded, never mixed with the next sequence's frames.

    >>> y, n = stack_frames(torch.arange(10.).view(1, 5, 2), torch.tensor([5]), 2)
    >>> y.shape, n.tolist()
    (torch.Size([1, 3, 4]), [3])
    """
    if k == 1:
        return x, lens
    b, f, d = x.shape
    pad = (-f) % k
    mask = torch.arange(f, device=x.device)[None, :] < lens[:, None]  # (B, F)
    x = x * mask[..., None]
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(b, (f + pad) // k, k * d), torch.div(lens + k - 1, k, rounding_mode="floor")


def frame_mask(lens: Tensor, length: int) -> Tensor:
    """``(B, length)`` True at valid frames."""
    return torch.arange(length, device=lens.device)[None, :] < lens[:, None]


class CausalTransformerAdapter(nn.Module):
    """Input projection → causal megatron-core decoder layers → final RMSNorm → output projection.

    Args:
        in_dim (int): encoder feature width D_in.
        out_dim (int): LLM hidden size H.
        num_layers (int): decoder layers. Default: 12 (paper).
        hidden_size (int): residual width. Default: 960 (paper).
        ffn_hidden_size (int): SwiGLU width. Default: 2560 (paper).
        num_attention_heads (int): Default: 15 (paper).
        num_query_groups (int): KV heads. Default: 5 (paper).
        downsample (int): frames stacked before the input projection. Default: 1.
        rope_base (float): RoPE theta over frame positions. Default: 10000.
        norm_eps (float): RMSNorm epsilon. Default: 1e-5.

    >>> a = CausalTransformerAdapter(16, 32, num_layers=1, hidden_size=24, ffn_hidden_size=48,
    ...                              num_attention_heads=3, num_query_groups=1)
    >>> y, n = a(torch.randn(2, 7, 16), torch.tensor([7, 4]))
    >>> y.shape, n.tolist()
    (torch.Size([2, 7, 32]), [7, 4])
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 12, hidden_size: int = 960,
                 ffn_hidden_size: int = 2560, num_attention_heads: int = 15, num_query_groups: int = 5,
                 downsample: int = 1, rope_base: float = 10000.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
        from megatron.core.transformer.transformer_block import TransformerBlock

        from nemo_salad.llm.attention import SDPAttention
        from nemo_salad.llm.config import LLMConfig
        from nemo_salad.llm.parallel import init_model_parallel, model_parallel_ready

        if not model_parallel_ready():
            init_model_parallel()
        self.downsample = downsample
        shape = LLMConfig(vocab_size=1, hidden_size=hidden_size, num_layers=num_layers,
                          num_attention_heads=num_attention_heads, num_query_groups=num_query_groups,
                          ffn_hidden_size=ffn_hidden_size, rope_base=rope_base, norm_eps=norm_eps)
        config = shape.transformer_config()
        spec = get_gpt_layer_local_spec(normalization="RMSNorm")
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
        self.in_proj = nn.Linear(in_dim * downsample, hidden_size)
        self.rope = RotaryEmbedding(kv_channels=shape.kv_channels, rotary_percent=1.0, rotary_base=rope_base,
                                    use_cpu_initialization=not torch.cuda.is_available())
        self.layers = TransformerBlock(config=config, spec=spec, post_layer_norm=True)
        self.out_proj = nn.Linear(hidden_size, out_dim)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, F, D_in), (B,) → (B, F', H), (B,)``; frame ``t`` sees frames ``≤ t`` of its own sequence."""
        from nemo_salad.llm.model import attention_mask_from_padding

        x, lens = stack_frames(x, lens, self.downsample)
        h = self.in_proj(x).transpose(0, 1).contiguous()  # (F', B, W)
        mask = attention_mask_from_padding(frame_mask(lens, h.shape[0]), h.shape[0])
        h = self.layers(hidden_states=h, attention_mask=mask, rotary_pos_emb=self.rope(h.shape[0]))
        return self.out_proj(h.transpose(0, 1)), lens


class MLPAdapter(nn.Module):
    """Frame stacking + two-layer MLP projector.

    Args:
        in_dim (int): encoder feature width.
        out_dim (int): LLM hidden size.
        downsample (int): frames stacked per output frame. Default: 2.
        hidden_size (int | None): MLP width; None means ``4 · out_dim``. Default: None.

    >>> y, n = MLPAdapter(8, 16, downsample=2)(torch.randn(1, 5, 8), torch.tensor([5]))
    >>> y.shape, n.tolist()
    (torch.Size([1, 3, 16]), [3])
    """

    def __init__(self, in_dim: int, out_dim: int, downsample: int = 2, hidden_size: int | None = None) -> None:
        super().__init__()
        self.downsample = downsample
        width = hidden_size or 4 * out_dim
        self.net = nn.Sequential(nn.LayerNorm(in_dim * downsample), nn.Linear(in_dim * downsample, width), nn.GELU(),
                                 nn.Linear(width, out_dim))

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        x, lens = stack_frames(x, lens, self.downsample)
        return self.net(x), lens


class ConformerAdapter(nn.Module):
    """NeMo Conformer layers (no further subsampling) and a projection to the LLM width.

    Args:
        in_dim (int): encoder feature width.
        out_dim (int): LLM hidden size.
        num_layers (int): Conformer layers. Default: 2.
        d_model (int): Conformer width. Default: 512.
        n_heads (int): attention heads. Default: 8.
        downsample (int): frames stacked before the Conformer. Default: 1.
        conv_kernel_size (int): depthwise convolution kernel. Default: 9.

    >>> y, n = ConformerAdapter(8, 16, num_layers=1, d_model=16, n_heads=2)(torch.randn(2, 6, 8), torch.tensor([6, 3]))
    >>> y.shape, n.tolist()
    (torch.Size([2, 6, 16]), [6, 3])
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 2, d_model: int = 512, n_heads: int = 8,
                 downsample: int = 1, conv_kernel_size: int = 9) -> None:
        super().__init__()
        from nemo.collections.asr.modules import ConformerEncoder

        from nemo_salad.modules.encoder import disable_length_sync

        self.downsample = downsample
        self.conformer = ConformerEncoder(feat_in=in_dim * downsample, n_layers=num_layers, d_model=d_model,
                                          subsampling_factor=1, n_heads=n_heads, conv_kernel_size=conv_kernel_size,
                                          dropout=0.0, dropout_pre_encoder=0.0, dropout_emb=0.0, dropout_att=0.0)
        disable_length_sync(self.conformer)  # a text-replay batch skips the adapter: no collective inside it
        self.proj = nn.Linear(d_model, out_dim)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        x, lens = stack_frames(x, lens, self.downsample)
        # keyword call: NeMo's typecheck rejects positional arguments
        y, lens = self.conformer(audio_signal=x.transpose(1, 2), length=lens)  # (B, d_model, F')
        return self.proj(y.transpose(1, 2)), lens

