"""Throughput and model FLOPs utilisation (MFU) of the Stage I training step.

One step = encode speech into the input slots, student forward, teacher forward (no grad), fused distillation loss,
backward, optimizer update — on a fixed batch of ``--samples`` × ``[text, speech, text]`` samples with
``--speech-seconds`` of audio each. Two model sizes:

* ``default`` — the embedded default of ``conf/stage1.yaml`` (SmolLM2-135M with LoRA and a shared teacher, the
  demo FastConformer, a 2-layer adapter);
* ``1b``      — a 1B-class student: Llama-3.2-1B's architecture (random weights, no download), fully fine-tuned
  next to a frozen teacher copy (the paper's setting), the small FastConformer and the small adapter;
* ``3b``      — the SALAD-3B recipe of ``conf/stage1_qwen2.5_3b.yaml`` with random weights (no download): Qwen2.5-3B's
  architecture fully fine-tuned next to a frozen teacher copy, the paper's 12-layer adapter, and a frozen
  FastConformer of the size of ``stt_en_fastconformer_ctc_large`` (17 layers, width 512) in place of the pretrained
  one. Pair it with ``--pack-length 2048`` (the recipe's packed rows).

Strategies: ``plain`` (the Lightning path: AdamW, fp32 or autocast bf16) and ``megatron`` (what NeMo-2's
``MegatronStrategy`` runs: ``Float16Module`` bf16, megatron DDP, distributed optimizer, megatron's schedule; on a
machine without CUDA through :func:`nemo_salad.llm.cpu.cuda_standins`, which checks the path but says nothing about
GPU speed). Model FLOPs per step are counted with ``torch.utils.flop_counter`` during the warm-up step (forward and
backward of everything the step computes; no recomputation counted). MFU = FLOPs per step / step time / peak. Peak
memory is ``torch.cuda.max_memory_allocated`` from the built model through the timed steps on a GPU, the process's
peak resident memory on the CPU.

    python benchmarks/stage1_throughput.py --model default --strategy plain --threads 1          # CPU
    python benchmarks/stage1_throughput.py --model 1b --strategy megatron --samples 16 --speech-seconds 10  # GPU
    python benchmarks/stage1_throughput.py --model 3b --strategy megatron --samples 48 --speech-seconds 10 \
        --pack-length 2048                                                                               # GPU

Prints one markdown row per run, and the first step's loss (the same batch and weights under both strategies give
the same loss, within bf16's precision).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

#: dense bf16 peak of the GPUs MFU is computed against (TFLOP/s); ``--peak-tflops`` overrides.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}

MODELS = {
    "default": [],
    "1b": ["model/llm=tiny", "model.llm.arch=llama3.2-1b", "model/teacher=copy", "model/encoder=fastconformer_small",
           "model/adapter=causal_small"],
    "3b": ["model.llm.pretrained=null", "model/encoder=fastconformer_small", "model.encoder.freeze=true",
           "model.encoder.encoder.n_layers=17", "model.encoder.encoder.d_model=512", "model.encoder.encoder.n_heads=8",
           "model.encoder.encoder.subsampling_conv_channels=256"],
}
#: the shipped config each model is composed from (default: ``stage1``)
CONFIGS = {"3b": "stage1_qwen2.5_3b"}


def _peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), None)


def build_model(model_name: str, device: torch.device, overrides: Sequence[str] = ()) -> tuple[Any, Any]:
    """The composed config and the built SaladModel (train mode, on ``device``) of ``MODELS[model_name]``.

    Args:
        model_name (str): a key of :data:`MODELS`. device (torch.device): where the model goes.
        overrides (Sequence[str]): more Hydra overrides, after the model's own (e.g. a tokenizer, random weights).
    """
    from nemo_salad.models.build import llm_source_dir
    from nemo_salad.models.salad import SaladModel
    from nemo_salad.recipes.bench import compose_config

    overrides = MODELS[model_name] + list(overrides)
    if model_name != "default" and not any(o.startswith("model.tokenizer.dir=") for o in overrides):
        # random weights; SmolLM2's tokenizer (its ids fit any of these vocabularies)
        overrides.append(f"model.tokenizer.dir={llm_source_dir('smollm2')}")
    cfg = compose_config(CONFIGS.get(model_name, "stage1"), overrides)
    torch.manual_seed(0)
    return cfg, SaladModel(cfg.model).to(device).train()


def count_flops(step: Callable[[], float]) -> tuple[int, float]:
    """Model FLOPs of one call of the training ``step`` (the matrix products, convolutions and attention of its
    forward and backward; the optimizer's element-wise work is not counted), and the step's loss."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss = step()
    return counter.get_total_flops(), loss


def _peak_memory_gib(device: torch.device) -> float:
    """GiB: ``max_memory_allocated`` since the last reset on a GPU; the process's peak resident memory on the CPU."""
    from nemo_salad.recipes.bench import peak_rss_mb

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_mb() / 1024


def run(args: argparse.Namespace, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Measure the step of ``args.model`` (built with ``overrides`` added) under ``args.strategy``; one result row."""
    from nemo_salad.llm.cpu import cuda_standins

    if args.strategy == "megatron":
        with cuda_standins():  # a no-op with CUDA
            return _run(args, overrides)
    return _run(args, overrides)


def _run(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from nemo_salad.llm.parallel import init_model_parallel
    from nemo_salad.recipes.bench import fixed_batch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    init_model_parallel()
    cfg, model = build_model(args.model, device, overrides)
    batch = fixed_batch(model, samples=args.samples, speech_seconds=args.speech_seconds,
                        pack_length=args.pack_length).to(device)
    tokens = int(batch.student_mask.sum())  # student positions: text tokens and speech frames, no padding
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optim = dict(cfg.model.optim)
    if args.strategy == "megatron":
        from nemo_salad.recipes.megatron_loop import train_step, wrap

        loop = wrap(model, {**optim, "lora_lr": None, "encoder_lr": None}, max_steps=args.steps + 1,
                    precision=args.precision, clip_grad=1.0)
        step = lambda: train_step(loop, [batch])  # noqa: E731
    else:
        from nemo_salad.parts.optim import build_optimizer

        opt = build_optimizer(model, optim, max_steps=args.steps + 1)["optimizer"]
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision.startswith("bf16"))

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = model.compute_loss(batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return float(loss)

    flops, first_loss = count_flops(step)  # warm-up (and the loss on the initial weights)
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    peak = _peak(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} thr)"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows, width = batch.student_ids.shape
    return {"model": args.model, "strategy": args.strategy, "precision": args.precision, "device": name,
            "trainable_m": trainable / 1e6, "samples": args.samples, "rows": rows, "width": width, "tokens": tokens,
            "step_s": step_s, "tokens_s": tokens / step_s,
            "padded": batch.padded_fraction, "audio_s_s": args.samples * args.speech_seconds / step_s,
            "tflops": flops / step_s / 1e12, "flops_step": flops,
            "mfu": flops / step_s / peak if peak else None, "peak_mem_gib": _peak_memory_gib(device),
            "first_loss": first_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="default")
    parser.add_argument("--strategy", choices=["plain", "megatron"], default="plain")
    parser.add_argument("--precision", default=None, help="bf16-mixed (GPU default) or 32 (CPU default)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--speech-seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (median reported)")
    parser.add_argument("--pack-length", type=int, default=None, help="pack samples into rows (default: one per row)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak of the device (default: by GPU name)")
    args = parser.parse_args()
    args.precision = args.precision or ("bf16-mixed" if torch.cuda.is_available() else "32")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    r = run(args)
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no peak for this device)"
    print("| model | strategy | precision | device | trainable M | samples × s | student tokens | padded | step s "
          "| tokens/s | audio s/s | model TFLOP/s | MFU | peak memory GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['model']} | {r['strategy']} | {r['precision']} | {r['device']} | {r['trainable_m']:.1f} | "
          f"{r['samples']} × {args.speech_seconds:g} | {r['tokens']} | {100 * r['padded']:.1f} % | {r['step_s']:.3f} | "
          f"{r['tokens_s']:.0f} | "
          f"{r['audio_s_s']:.1f} | {r['tflops']:.3f} | {mfu} | {r['peak_mem_gib']:.1f} |")
    print(f"model FLOPs per step: {r['flops_step']:.3e}; first-step loss: {r['first_loss']:.6f}")


if __name__ == "__main__":
    main()
