"""Speech synthesis for SALAD: TTS backends (NeMo FastPitch + HiFi-GAN, offline piper, espeak-ng, a fake) and a
batched, resumable writer of lhotse Shar corpora with provenance and an optional ASR round-trip filter.

>>> import tempfile
>>> from nemo_salad.synthesis import SineBackend, load_synthesized, synthesize_to_shar, text_cuts
>>> out = tempfile.mkdtemp()
>>> report = synthesize_to_shar(text_cuts([("q1", "What is the capital of France?")]), SineBackend(), out,
...                             progress=False)
>>> cut = next(iter(load_synthesized(out)))
>>> cut.custom["tts_backend"], cut.custom["source_id"], cut.sampling_rate
('sine', 'q1', 16000)
"""

from nemo_salad.synthesis.asr_filter import (
    CERFilter,
    NeMoTranscriber,
    Transcriber,
    WhisperTranscriber,
    character_error_rate,
    word_error_rate,
)
from nemo_salad.synthesis.backends import (
    EspeakBackend,
    NeMoTTSBackend,
    PiperBackend,
    SineBackend,
    TTSBackend,
    build_backend,
)
from nemo_salad.synthesis.cuts import read_text_items, text_cuts
from nemo_salad.synthesis.shar_store import load_synthesized, shar_fields
from nemo_salad.synthesis.text import validate_text
from nemo_salad.synthesis.word_align import WhisperWordAligner, WordAligner, build_aligner
from nemo_salad.synthesis.writer import SynthesisReport, synthesize_to_shar

__all__ = [
    "CERFilter",
    "EspeakBackend",
    "NeMoTTSBackend",
    "NeMoTranscriber",
    "PiperBackend",
    "SineBackend",
    "SynthesisReport",
    "TTSBackend",
    "Transcriber",
    "WhisperTranscriber",
    "WhisperWordAligner",
    "WordAligner",
    "build_aligner",
    "build_backend",
    "character_error_rate",
    "load_synthesized",
    "read_text_items",
    "shar_fields",
    "synthesize_to_shar",
    "text_cuts",
    "validate_text",
    "word_error_rate",
]
