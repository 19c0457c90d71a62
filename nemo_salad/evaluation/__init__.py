"""Spoken benchmarks, few-shot log-likelihood scoring, text topline, ASR cascade and the text–speech gap table.

>>> from nemo_salad.evaluation import load_benchmark
>>> load_benchmark("copa", n_items=4).items[0].query[0].spoken
True
"""

from nemo_salad.evaluation.asr import CutTranscriber, ReferenceTranscriber, build_transcriber
from nemo_salad.evaluation.benchmarks import BENCHMARKS, PAPER_BENCHMARKS, BenchmarkSpec, get_spec
from nemo_salad.evaluation.callback import SpokenEvalCallback
from nemo_salad.evaluation.conditions import MemoSpeech, NoisySpeech, Voice
from nemo_salad.evaluation.config import EvalConfig, load_config, run_evaluation
from nemo_salad.evaluation.generate import GenerationSettings, generate_and_extract
from nemo_salad.evaluation.harness import ScoringSettings, evaluate, evaluate_benchmark
from nemo_salad.evaluation.intervals import bootstrap_mean
from nemo_salad.evaluation.items import MCItem, Segment, SkipItem, make_item
from nemo_salad.evaluation.loaders import Benchmark, load_benchmark, read_rows
from nemo_salad.evaluation.report import markdown_table, plot_results, write_report
from nemo_salad.evaluation.results import BenchmarkResult, EvalResults, SystemScores
from nemo_salad.evaluation.run_report import write_run_report
from nemo_salad.evaluation.runner import Condition, RunResults, run_protocols
from nemo_salad.evaluation.scoring import OptionScore, ScoreRequest, score_full_forward, score_shared_context
from nemo_salad.evaluation.spoken import SpokenSource, SynthesizedSpeech, TranscriptOnlySpeech, spoken_cut_id
from nemo_salad.evaluation.summary import summarise
from nemo_salad.evaluation.systems import (
    CascadeSystem,
    IdentitySpeechEncoder,
    SpeechContextEncoder,
    SpeechSystem,
    TextSystem,
    Transcriber,
    standard_systems,
)

__all__ = [
    "BENCHMARKS", "PAPER_BENCHMARKS", "Benchmark", "BenchmarkResult", "BenchmarkSpec", "CascadeSystem", "Condition",
    "CutTranscriber", "EvalConfig", "EvalResults", "GenerationSettings", "IdentitySpeechEncoder", "MCItem",
    "MemoSpeech", "NoisySpeech", "OptionScore", "ReferenceTranscriber", "RunResults", "ScoreRequest",
    "ScoringSettings", "Segment", "SkipItem", "SpeechContextEncoder", "SpeechSystem", "SpokenEvalCallback",
    "SpokenSource", "SynthesizedSpeech", "SystemScores", "TextSystem", "Transcriber", "TranscriptOnlySpeech", "Voice",
    "bootstrap_mean", "build_transcriber", "evaluate", "evaluate_benchmark", "generate_and_extract", "get_spec",
    "load_benchmark", "load_config", "make_item", "markdown_table", "plot_results", "read_rows", "run_evaluation",
    "run_protocols", "score_full_forward", "score_shared_context", "spoken_cut_id", "standard_systems", "summarise",
    "write_report", "write_run_report",
]
