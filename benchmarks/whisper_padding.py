"""Whisper encoder: clips encoded at their own length vs inside Whisper's zero-padded 30 s window.

Speech: 8 English sentences (1.5-12 s at 16 kHz) spoken by the offline piper voice. Encoder: the embedded Whisper
tiny.en (converted from CTranslate2). For each clip, alone (batch of 1):

1. Cost: median wall time of the encoder (log-mel included) over ``--reps`` calls in each setting.
2. Features: cosine similarity per valid frame between the two settings (mean over all frames, over the first 25
   frames = 0.5 s, and the worst clip's mean) and the largest absolute difference.
3. Content: greedy CTranslate2 decoding (``generate`` on the encoder output) from each encoding, word error rate
   against the sentence over its first ``len(sentence)`` words (a decoder that never saw a short window may not
   stop, so both hypotheses are cut to the reference's length), and how many decodings stopped by themselves.

    python benchmarks/whisper_padding.py --threads 1 --reps 5
"""

from __future__ import annotations

import argparse
import os
import re

TEXTS = [
    "Good morning, everyone.",
    "And you always want to see it in the superlative degree.",
    "He turned sharply and faced Gregson across the table.",
    "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    "The committee will meet again on Thursday to discuss the budget for the coming year and the new library.",
    "Most plants need sunlight, water and air to grow. Their roots take up minerals from the soil, and their "
    "leaves turn light into sugar.",
    "When the weather turned cold, the birds flew south over the mountains, and the farmers brought their animals "
    "into the barns before the first snow of the winter covered the fields.",
    "A student wants to find out which kind of soil holds the most water. She fills three cups with sand, clay "
    "and garden soil, pours the same amount of water into each, and measures how much drains out after ten "
    "minutes.",
]


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def _wer(ref: list[str], hyp: list[str]) -> int:
    """Word edit distance (substitutions + insertions + deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import ctranslate2
    import numpy as np
    import tokenizers
    import torch

    from nemo_salad.modules.whisper_encoder import build_whisper_encoder
    from nemo_salad.parts.ct2_whisper import embedded_whisper_model_dir
    from nemo_salad.recipes.bench import median_time
    from nemo_salad.synthesis.audio import resample
    from nemo_salad.synthesis.backends.piper import PiperBackend

    torch.set_num_threads(args.threads)
    piper = PiperBackend(num_threads=args.threads)
    waves = [torch.from_numpy(resample(w, piper.sample_rate, 16000)) for w in piper.synthesize(TEXTS)]
    encoders = {pad: build_whisper_encoder({"kind": "whisper", "pretrained": "tiny.en", "freeze": True,
                                            "pad_to_window": pad}) for pad in (False, True)}
    ct2_dir = embedded_whisper_model_dir("tiny.en")
    decoder = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32",
                                         intra_threads=args.threads)
    tokenizer = tokenizers.Tokenizer.from_file(str(ct2_dir / "tokenizer.json"))
    prompt = [[tokenizer.token_to_id("<|startoftranscript|>"), tokenizer.token_to_id("<|notimestamps|>")]]

    def encode(pad: bool, wave: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats, lens = encoders[pad](wave[None], torch.tensor([len(wave)]))
        return feats[0, : int(lens[0])]

    def decode(feats: np.ndarray, n_ref: int) -> tuple[list[str], bool]:
        out = decoder.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None])), prompt,
                               beam_size=1, max_length=2 * n_ref + 20, return_scores=False)
        ids = out[0].sequences_ids[0]
        return _words(tokenizer.decode(ids))[:n_ref], len(ids) < 2 * n_ref + 20 - len(prompt[0])

    rows = []
    for text, wave in zip(TEXTS, waves):
        t_own = median_time(lambda w=wave: encode(False, w), args.reps)
        t_pad = median_time(lambda w=wave: encode(True, w), args.reps)
        own, pad = encode(False, wave), encode(True, wave)
        cos = torch.nn.functional.cosine_similarity(own, pad, dim=-1)
        with torch.no_grad():  # the decoder gets the whole padded window, as in faster-whisper
            mel = encoders[True].mel(wave[None], torch.tensor([len(wave)]), encoders[True].window)
            window = encoders[True]._encode(mel, torch.tensor([mel.shape[2]]))[0]
        ref = _words(text)
        hyp_own, stop_own = decode(own.numpy(), len(ref))
        hyp_pad, stop_pad = decode(window.numpy(), len(ref))
        rows.append({"sec": len(wave) / 16000, "t_own": t_own, "t_pad": t_pad, "cos": float(cos.mean()),
                     "cos25": float(cos[:25].mean()), "maxdiff": float((own - pad).abs().max()),
                     "absmax": float(pad.abs().max()), "words": len(ref), "err_own": _wer(ref, hyp_own),
                     "err_pad": _wer(ref, hyp_pad), "stop_own": stop_own, "stop_pad": stop_pad})
        r = rows[-1]
        print(f"{r['sec']:5.1f} s  own {t_own:.3f} s  30s-window {t_pad:.3f} s  cos {r['cos']:.3f} "
              f"(first 25: {r['cos25']:.3f})  max|diff| {r['maxdiff']:.2f} (max|pad| {r['absmax']:.2f})  "
              f"word errors own {r['err_own']}/{len(ref)} pad {r['err_pad']}/{len(ref)}  "
              f"stopped own {stop_own} pad {stop_pad}")
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    print(f"\n{len(rows)} clips, {min(r['sec'] for r in rows):.1f}-{max(r['sec'] for r in rows):.1f} s "
          f"(mean {mean('sec'):.1f} s), {args.threads} thread(s)")
    print(f"time per clip: own length {mean('t_own'):.3f} s, 30 s window {mean('t_pad'):.3f} s "
          f"({mean('t_pad') / mean('t_own'):.1f}x)")
    print(f"cosine own vs window: mean {mean('cos'):.3f}, first 25 frames {mean('cos25'):.3f}, worst clip "
          f"{min(r['cos'] for r in rows):.3f}; max|diff| {max(r['maxdiff'] for r in rows):.2f} "
          f"(max|window features| {max(r['absmax'] for r in rows):.2f})")
    words = sum(r["words"] for r in rows)
    print(f"greedy decoding word errors (first len(ref) words): own {sum(r['err_own'] for r in rows)}/{words}, "
          f"window {sum(r['err_pad'] for r in rows)}/{words}; stopped by itself: own "
          f"{sum(r['stop_own'] for r in rows)}/{len(rows)}, window {sum(r['stop_pad'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
