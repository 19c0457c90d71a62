"""A plain model config for the Llama / Qwen2 decoder family, and its mapping to and from Hugging Face.

:class:`LLMConfig` holds only what defines the network. :func:`LLMConfig.from_hf` reads a
``transformers`` ``config.json`` dict, :meth:`LLMConfig.to_hf` writes one back, and
:meth:`LLMConfig.transformer_config` produces megatron-core's ``TransformerConfig``. The named presets in
:data:`PRESETS` cover the families nemo_salad ships recipes for; ``tests/llm/test_config.py`` checks them
against NeMo-2's own ``llm`` configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LLMConfig", "PRESETS", "SUPPORTED_ARCHITECTURES", "UnsupportedModelError"]

#: HF ``architectures`` entries we can convert, mapped to our family tag.
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_FAMILY_TO_ARCH = {v: k for k, v in SUPPORTED_ARCHITECTURES.items()}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UnsupportedModelError(ValueError):
    """A checkpoint's config describes a model this converter cannot represent exactly."""


@dataclass
class LLMConfig:
    """Architecture of a Llama/Qwen2-style decoder (RMSNorm, SwiGLU, RoPE, GQA).

    Args:
        family (str): ``"llama"`` (Llama, SmolLM) or ``"qwen2"`` (Qwen2 / Qwen2.5).
        vocab_size (int): rows of the embedding matrix.
        hidden_size (int): model width H.
        num_layers (int): decoder layers.
        num_attention_heads (int): query heads.
        num_query_groups (int): key/value heads (GQA groups); must divide ``num_attention_heads``.
        ffn_hidden_size (int): SwiGLU inner width.
        head_dim (int | None): per-head width; None means ``hidden_size // num_attention_heads``.
        rope_base (float): RoPE theta (1e4 Llama-2, 1e5 SmolLM2, 5e5 Llama-3, 1e6 Qwen2.5).
        rope_scaling_factor (float | None): Llama-3.1 style RoPE scaling factor, None for no scaling.
        norm_eps (float): RMSNorm epsilon.
        qkv_bias (bool): bias on the query/key/value projections (Qwen2).
        tie_embeddings (bool): share the input embedding with the output layer.
        max_position_embeddings (int): longest sequence the model is meant for.
        init_method_std (float): std of the random init used when no weights are loaded.
        params_dtype (str): ``float32`` | ``bfloat16`` | ``float16``.
        bos_token_id (int | None): kept for Hugging Face export.
        eos_token_id (int | list[int] | None): kept for Hugging Face export.

    >>> cfg = LLMConfig.preset("tiny-llama")
    >>> cfg.num_attention_heads % cfg.num_query_groups
    0
    """

    family: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_attention_heads: int = 4
    num_query_groups: int = 2
    ffn_hidden_size: int = 128
    head_dim: int | None = None
    rope_base: float = 10000.0
    rope_scaling_factor: float | None = None
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 2048
    init_method_std: float = 0.02
    params_dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.family not in _FAMILY_TO_ARCH:
            problems.append(f"family={self.family!r} (expected one of {sorted(_FAMILY_TO_ARCH)})")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_attention_heads", "num_query_groups",
                     "ffn_hidden_size", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name}={getattr(self, name)} (expected > 0)")
        if self.num_query_groups > 0 and self.num_attention_heads % self.num_query_groups:
            problems.append(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                            f"num_query_groups={self.num_query_groups}")
        if self.head_dim is None and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                            f"{self.num_attention_heads}; set head_dim explicitly")
        if self.params_dtype not in _DTYPES:
            problems.append(f"params_dtype={self.params_dtype!r} (expected one of {sorted(_DTYPES)})")
        if problems:
            raise ValueError("invalid LLMConfig: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived values
    @property
    def kv_channels(self) -> int:
        """Per-head width (``head_dim``)."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        """``params_dtype`` as a torch dtype."""
        return _DTYPES[self.params_dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for YAML / ``.nemo`` configs)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LLMConfig:
        """Build from a plain dict, rejecting unknown keys by name.

        Raises:
            ValueError: on keys that are not fields of :class:`LLMConfig`.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LLMConfig field(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LLMConfig:
        """A named architecture from :data:`PRESETS`, with optional field overrides.

        Raises:
            KeyError: for an unknown preset name (the message lists the known ones).
        """
        if name not in PRESETS:
            raise KeyError(f"unknown LLM preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ Hugging Face
    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> LLMConfig:
        """Read a Hugging Face ``config.json`` dict of a Llama or Qwen2 causal LM.

        Args:
            hf (dict): the parsed ``config.json``.
            source (str): file name used in error messages. Default: "config.json".

        Raises:
            UnsupportedModelError: for another architecture, a ``model_type`` that disagrees with
                ``architectures``, a size that is not an integer (or a rate that is not a number), or options the
                Megatron model would not reproduce exactly (sliding-window attention, o_proj/MLP biases, non-SiLU
                activations, RoPE scaling other than Llama-3's); each names ``source`` and the field.

        >>> LLMConfig.from_hf({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 32, "hidden_size": 16,
        ...     "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        ...     "num_key_value_heads": 1}).qkv_bias
        True
        """
        archs = hf.get("architectures") or []
        family = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if family is None:
            raise UnsupportedModelError(
                f"{source}: architectures={archs!r} (model_type={hf.get('model_type')!r}) is not supported; "
                f"expected one of {sorted(SUPPORTED_ARCHITECTURES)}"
            )

        model_type = hf.get("model_type")
        if model_type is not None and model_type != family:
            raise UnsupportedModelError(f"{source}: model_type={model_type!r} disagrees with architectures={archs!r} "
                                        f"(expected model_type {family!r}); fix whichever of the two is wrong")

        def require(key: str) -> Any:
            if key not in hf:
                raise UnsupportedModelError(f"{source}: required field {key!r} is missing")
            return hf[key]

        def integer(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UnsupportedModelError(f"{source}: {key}={value!r} is not an integer (expected a whole number "
                                            "such as 2048)")
            return value

        def number(key: str, default: float) -> float:
            value = hf.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UnsupportedModelError(f"{source}: {key}={value!r} is not a number (expected e.g. {default!r})")
            return float(value)

        def reject(condition: bool, what: str) -> None:
            if condition:
                raise UnsupportedModelError(f"{source}: {what} is not supported by the Megatron model")

        reject(hf.get("hidden_act", "silu") != "silu", f"hidden_act={hf.get('hidden_act')!r} (expected 'silu')")
        reject(bool(hf.get("mlp_bias", False)), "mlp_bias=true")
        if family == "llama":
            reject(bool(hf.get("attention_bias", False)), "attention_bias=true (bias on o_proj)")
            qkv_bias = False
        else:
            reject(bool(hf.get("use_sliding_window", False)), "use_sliding_window=true")
            qkv_bias = True
        scaling = hf.get("rope_scaling")
        factor = None
        if scaling:
            kind = scaling.get("rope_type", scaling.get("type"))
            expected = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
            found = {k: scaling.get(k) for k in expected}
            reject(kind != "llama3" or any(float(found[k] or 0) != v for k, v in expected.items()),
                   f"rope_scaling={scaling!r} (only Llama-3 scaling with {expected} is)")
            factor = float(scaling["factor"])
        heads = integer("num_attention_heads", require("num_attention_heads"))
        hidden = integer("hidden_size", require("hidden_size"))
        head_dim = hf.get("head_dim")
        if head_dim is not None and integer("head_dim", head_dim) == hidden // max(heads, 1):
            head_dim = None
        known = {"architectures", "model_type", "hidden_act", "mlp_bias", "attention_bias", "use_sliding_window",
                 "rope_scaling", "num_attention_heads", "hidden_size", "head_dim", "vocab_size",
                 "intermediate_size", "num_hidden_layers", "num_key_value_heads", "rope_theta", "rms_norm_eps",
                 "tie_word_embeddings", "max_position_embeddings", "initializer_range", "bos_token_id",
                 "eos_token_id", "torch_dtype", "dtype"}
        return cls(
            family=family,
            vocab_size=integer("vocab_size", require("vocab_size")),
            hidden_size=hidden,
            num_layers=integer("num_hidden_layers", require("num_hidden_layers")),
            num_attention_heads=heads,
            num_query_groups=integer("num_key_value_heads", hf.get("num_key_value_heads") or heads),
            ffn_hidden_size=integer("intermediate_size", require("intermediate_size")),
            head_dim=head_dim,
            rope_base=number("rope_theta", 10000.0),
            rope_scaling_factor=factor,
            norm_eps=number("rms_norm_eps", 1e-6),
            qkv_bias=qkv_bias,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=integer("max_position_embeddings", hf.get("max_position_embeddings", 2048)),
            init_method_std=number("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            extra={k: v for k, v in hf.items() if k not in known and not k.startswith("_")},
        )

    def to_hf(self) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers`` loads as the same architecture.

        >>> LLMConfig.preset("tiny-qwen2").to_hf()["architectures"]
        ['Qwen2ForCausalLM']
        """
        hf: dict[str, Any] = dict(self.extra)
        hf.update(
            architectures=[_FAMILY_TO_ARCH[self.family]],
            model_type=self.family,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.ffn_hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_query_groups,
            hidden_act="silu",
            rope_theta=self.rope_base,
            rms_norm_eps=self.norm_eps,
            tie_word_embeddings=self.tie_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.init_method_std,
            torch_dtype=self.params_dtype,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )
        if self.family == "llama":
            hf.update(attention_bias=False, mlp_bias=False, head_dim=self.kv_channels)
        else:
            hf.update(use_sliding_window=False)
        if self.rope_scaling_factor is not None:
            hf["rope_scaling"] = {"rope_type": "llama3", "factor": self.rope_scaling_factor, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        return hf

    # ------------------------------------------------------------------ megatron-core
    def transformer_config(self, **overrides: Any):
        """megatron-core ``TransformerConfig`` for this architecture.

        Fusions that need Transformer Engine or apex are off; on CPU, parameters are created on the CPU.
        ``tensor_model_parallel_size`` defaults to the size of megatron's tensor-parallel group when one exists, so
        every block built from this config (LLM, adapter) agrees with the layers' process group.
        ``overrides`` are passed through (e.g. ``tensor_model_parallel_size``, ``bf16``,
        ``sequence_parallel``).
        """
        import torch.nn.functional as F
        from megatron.core.transformer import TransformerConfig

        kwargs: dict[str, Any] = dict(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_query_groups=self.num_query_groups,
            ffn_hidden_size=self.ffn_hidden_size,
            kv_channels=self.kv_channels,
            normalization="RMSNorm",
            layernorm_epsilon=self.norm_eps,
            gated_linear_unit=True,
            activation_func=F.silu,
            add_bias_linear=False,
            add_qkv_bias=self.qkv_bias,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            init_method_std=self.init_method_std,
            params_dtype=self.torch_dtype,
            bf16=self.params_dtype == "bfloat16",
            fp16=self.params_dtype == "float16",
            use_cpu_initialization=not torch.cuda.is_available(),
            bias_activation_fusion=False,
            bias_dropout_fusion=False,
            masked_softmax_fusion=False,
            apply_rope_fusion=False,
            persist_layer_norm=False,
            gradient_accumulation_fusion=False,
        )
        from megatron.core import parallel_state

        if parallel_state.model_parallel_is_initialized():
            kwargs["tensor_model_parallel_size"] = parallel_state.get_tensor_model_parallel_world_size()
        kwargs.update(overrides)
        return TransformerConfig(**kwargs)


_QWEN2 = dict(family="qwen2", qkv_bias=True, rope_base=1e6, norm_eps=1e-6)

#: Named architectures. Real-model values are those of the published Hugging Face ``config.json``.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(family="llama", vocab_size=256, hidden_size=64, num_layers=2, num_attention_heads=4,
                       num_query_groups=2, ffn_hidden_size=128, rope_base=10000.0, max_position_embeddings=512),
    "tiny-qwen2": dict(**_QWEN2, vocab_size=256, hidden_size=64, num_layers=2, num_attention_heads=4,
                       num_query_groups=2, ffn_hidden_size=128, tie_embeddings=True, max_position_embeddings=512),
    "smollm2-135m": dict(family="llama", vocab_size=49152, hidden_size=576, num_layers=30, num_attention_heads=9,
                         num_query_groups=3, ffn_hidden_size=1536, rope_base=100000.0, norm_eps=1e-5,
                         tie_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2),
    "smollm2-360m": dict(family="llama", vocab_size=49152, hidden_size=960, num_layers=32, num_attention_heads=15,
                         num_query_groups=5, ffn_hidden_size=2560, rope_base=100000.0, norm_eps=1e-5,
                         tie_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2),
    "llama3.2-1b": dict(family="llama", vocab_size=128256, hidden_size=2048, num_layers=16, num_attention_heads=32,
                        num_query_groups=8, ffn_hidden_size=8192, rope_base=500000.0, rope_scaling_factor=32.0,
                        norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=131072,
                        bos_token_id=128000, eos_token_id=128001),
    "qwen2.5-0.5b": dict(**_QWEN2, vocab_size=151936, hidden_size=896, num_layers=24, num_attention_heads=14,
                         num_query_groups=2, ffn_hidden_size=4864, tie_embeddings=True,
                         max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151643),
    "qwen2.5-1.5b": dict(**_QWEN2, vocab_size=151936, hidden_size=1536, num_layers=28, num_attention_heads=12,
                         num_query_groups=2, ffn_hidden_size=8960, tie_embeddings=True,
                         max_position_embeddings=131072, bos_token_id=151643, eos_token_id=151643),
    "qwen2.5-3b": dict(**_QWEN2, vocab_size=151936, hidden_size=2048, num_layers=36, num_attention_heads=16,
                       num_query_groups=2, ffn_hidden_size=11008, tie_embeddings=True,
                       max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151643),
    "qwen2.5-7b": dict(**_QWEN2, vocab_size=152064, hidden_size=3584, num_layers=28, num_attention_heads=28,
                       num_query_groups=4, ffn_hidden_size=18944, tie_embeddings=False,
                       max_position_embeddings=131072, bos_token_id=151643, eos_token_id=151643),
}
