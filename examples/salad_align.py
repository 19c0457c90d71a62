"""Add word alignments to a lhotse cuts manifest by CTC forced alignment with a NeMo CTC ASR model.

    python examples/salad_align.py --model stt_en_fastconformer_ctc_large.nemo \
        --input data/train_cuts.jsonl.gz --output data/train_cuts_aligned.jsonl.gz

Rerun the same command to resume an interrupted run; the output manifest appears only when every cut is done.
Cuts that cannot be aligned are written without word times and listed at the end. The interleaved layout cuts
the audio at these word times (without them it falls back to proportional times, see nemo_salad/data/layout.py).
"""

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="NeMo CTC model: a .nemo path or a NeMo pretrained name")
    parser.add_argument("--input", required=True, help="lhotse cuts manifest (.jsonl or .jsonl.gz)")
    parser.add_argument("--output", required=True, help="aligned manifest to write")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    args = parser.parse_args()

    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    import torch
    from nemo.collections.asr.models import ASRModel

    from nemo_salad.data.align import CTCWordAligner, align_manifest
    from nemo_salad.synthesis.backends.nemo_tts import load_nemo_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_nemo_model(ASRModel, args.model, device).eval()
    aligner = CTCWordAligner(model, sample_rate=int(model.cfg.get("sample_rate", 16000)))
    report = align_manifest(args.input, args.output, aligner, batch_size=args.batch_size)
    print(json.dumps({"aligned": report.n_aligned, "resumed": report.n_resumed,
                      "unaligned": len(report.unaligned), "unaligned_cuts": report.unaligned}, indent=2))


if __name__ == "__main__":
    main()
