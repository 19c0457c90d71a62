"""Configuration schema of a Stage II selection round (a dataclass, merged with ``conf/select.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ClusterConfig", "EmbedConfig", "SelectionConfig"]


@dataclass
class EmbedConfig:
    """Step 1. ``encoder``: ``"sentence_transformers"`` (``model`` = local folder; None = offline
    all-MiniLM-L6-v2, the paper uses BAAI/bge-large-en-v1.5) or ``"hashing"`` (model-free, ``dim`` features).

    >>> EmbedConfig(encoder="hashing").dim
    384
    """

    encoder: str = "sentence_transformers"
    model: str | None = None
    batch_size: int = 64
    chunk_size: int = 2048
    dtype: str = "float32"
    dim: int = 384


@dataclass
class ClusterConfig:
    """Step 2: balanced k-means into ``k`` clusters (paper K = 128), sizes within ``(1 ± slack) N/K``.

    >>> ClusterConfig(k=64).metric
    'cosine'
    """

    k: int = 128
    slack: float = 0.05
    n_iter: int = 20
    refine_iter: int = 3
    metric: str = "cosine"


@dataclass
class SelectionConfig:
    """One selection round.

    Attributes:
        embed (EmbedConfig): step 1.
        cluster (ClusterConfig): step 2.
        probe_size (int): probe texts synthesized and measured per cluster (step 3). Default: 16.
        max_probe_dropout (float): a cluster whose probe loses more than this fraction to the CER filter (or to
            failed synthesis) is excluded from sampling. Default: 0.5.
        gamma (float): exponent of ``P_target ∝ P_web · M^γ`` (paper 5; 0 = size-proportional baseline).
        budget (float): amount of synthetic data to add, in ``budget_unit``. Default: 1.0.
        budget_unit (str): ``"hours"`` of synthesized speech or ``"tokens"`` of text. Default: "hours".
        tokenizer (str | None): local Hugging Face tokenizer folder for ``"tokens"`` budgets. Default: None.
        seed (int): seed of clustering, probes and sampling. Default: 0.
        measure_tag (str): names the model whose misalignment is measured (stored M values are reused only
            for the same tag). Default: "stage1".
        batch_size (int): TTS batch size. Default: 8.
        shard_size (int): items per synthesized Shar shard. Default: 500.
        max_chars (int): longer texts are skipped by the synthesizer. Default: 600.

    >>> SelectionConfig(budget=2.0).cluster.k
    128
    """

    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    probe_size: int = 16
    max_probe_dropout: float = 0.5
    gamma: float = 5.0
    budget: float = 1.0
    budget_unit: str = "hours"
    tokenizer: str | None = None
    seed: int = 0
    measure_tag: str = "stage1"
    batch_size: int = 8
    shard_size: int = 500
    max_chars: int = 600

    def __post_init__(self) -> None:
        if isinstance(self.embed, dict):
            self.embed = EmbedConfig(**self.embed)
        if isinstance(self.cluster, dict):
            self.cluster = ClusterConfig(**self.cluster)
        if self.budget_unit not in ("hours", "tokens"):
            raise ValueError(f"budget_unit must be 'hours' or 'tokens', got {self.budget_unit!r}")
        if not self.budget > 0:
            raise ValueError(f"budget must be > 0, got {self.budget}")
        if self.probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {self.probe_size}")
        if not 0.0 <= self.max_probe_dropout <= 1.0:
            raise ValueError(f"max_probe_dropout must be in [0, 1], got {self.max_probe_dropout}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
