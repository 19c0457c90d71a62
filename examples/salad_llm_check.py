"""End-to-end check of the embedded LLM: SmolLM2-135M on megatron-core vs transformers, then a greedy answer.

    python examples/salad_llm_check.py
"""

import torch
from transformers import AutoModelForCausalLM

from nemo_salad.llm.smollm2 import load_smollm2, smollm2_hf_dir


def main() -> None:
    torch.set_num_threads(1)
    llm, tokenizer = load_smollm2()
    reference = AutoModelForCausalLM.from_pretrained(str(smollm2_hf_dir()), dtype=torch.float32).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (llm(input_ids=ids) - reference(ids).logits).abs().max().item()
        for _ in range(8):
            ids = torch.cat([ids, llm(input_ids=ids)[:, -1:].argmax(-1)], dim=1)
    print(f"max |logit(megatron) - logit(transformers)| = {diff:.2e}")
    print(f"greedy: {tokenizer.decode(ids[0])!r}")


if __name__ == "__main__":
    main()
