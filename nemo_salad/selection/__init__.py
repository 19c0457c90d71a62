"""Stage II active selection (paper §5): embed a broad text corpus, cluster it with balanced k-means, measure the
model's misalignment M(c) per cluster on synthesized probes, sample texts ∝ P_web(c) · M(c)^γ within a budget,
synthesize them, and report.

Each step is a function with its artefacts on disk; :func:`run_selection_round` chains them and resumes after a
kill; :class:`nemo_salad.callbacks.ActiveSelectionCallback` runs rounds during training.
"""

from nemo_salad.selection.active import ActiveSelection, load_selection, select_and_synthesize
from nemo_salad.selection.cluster import (
    BalancedKMeansResult,
    balanced_assign,
    balanced_kmeans,
    cluster_step,
    size_bounds,
)
from nemo_salad.selection.config import ClusterConfig, EmbedConfig, SelectionConfig
from nemo_salad.selection.embed import embed_texts, load_embeddings, texts_fingerprint
from nemo_salad.selection.encoders import (
    HashingEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_encoder,
    default_model_path,
)
from nemo_salad.selection.probe import ProbeResult, measure_probes, probe_indices, synthesize_probes
from nemo_salad.selection.report import add_after_measurement, build_report, plot_report
from nemo_salad.selection.round import SelectionResult, run_selection_round
from nemo_salad.selection.sample import BudgetPrefix, DrawSequence, budget_prefix
from nemo_salad.selection.target import cluster_shares, target_distribution

__all__ = [
    "ActiveSelection",
    "BalancedKMeansResult",
    "BudgetPrefix",
    "ClusterConfig",
    "DrawSequence",
    "EmbedConfig",
    "HashingEncoder",
    "ProbeResult",
    "SelectionConfig",
    "SelectionResult",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "add_after_measurement",
    "balanced_assign",
    "balanced_kmeans",
    "budget_prefix",
    "build_encoder",
    "build_report",
    "cluster_shares",
    "cluster_step",
    "default_model_path",
    "embed_texts",
    "load_embeddings",
    "load_selection",
    "measure_probes",
    "plot_report",
    "probe_indices",
    "run_selection_round",
    "select_and_synthesize",
    "size_bounds",
    "synthesize_probes",
    "target_distribution",
    "texts_fingerprint",
]
