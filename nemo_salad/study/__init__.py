"""The findings study: the paper's directional claims reproduced on offline parts in one resumable command.

``examples/salad_study.py`` (``conf/study.yaml``) prepares a narrow spoken corpus and a broad text corpus, trains
Stage I at several α and Stage II arms (γ = 5, γ = 0, no synthetic speech) from the α = 1 pre-decay checkpoint,
measures each model (held-out F and M per utterance, M(c) per cluster, spoken and text accuracy per item), and writes
``docs/findings.md`` with bootstrap intervals, leave-one-out R² and a verdict per finding
(:mod:`~nemo_salad.study.runner`). Each run is a subprocess (:mod:`~nemo_salad.study.worker`) cached by its
fingerprint, so a killed study resumes without redoing finished runs and one failed run loses no other.
"""

from nemo_salad.study.config import StudyConfig, load_study_config

__all__ = ["StudyConfig", "load_study_config"]
