"""Export the LLM part of a trained SALAD model as a Hugging Face directory, with a logit-parity check.

LoRA updates are folded into the weights of the exported copy (the model itself is not modified). The export
is then loaded with ``transformers`` and compared with the Megatron student on a fixed text: a difference above
``tolerance`` raises, so a broken export never goes unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nemo_salad.llm.hf_checkpoint import write_hf_checkpoint
from nemo_salad.llm.hf_convert import megatron_to_hf
from nemo_salad.modules.lora import LoRA

__all__ = ["export_llm_to_hf", "merged_llm_state"]

PARITY_TEXT = "The speech-adapted model should still know that the capital of France is Paris."


@torch.no_grad()
def merged_llm_state(llm: Any) -> dict[str, torch.Tensor]:
    """Full megatron state of ``llm`` with every LoRA update added into its base weight (tensor parallel size 1)."""
    state = {k: v.detach().clone() for k, v in llm.gpt.state_dict().items()
             if not k.endswith("_extra_state") and ".lora." not in k}
    for name, module in llm.gpt.named_modules():
        lora = getattr(module, "lora", None)
        if isinstance(lora, LoRA) and lora.enabled:
            state[f"{name}.weight"] += (lora.b.weight @ lora.a.weight * lora.scale).to(state[f"{name}.weight"].dtype)
    return state


@torch.no_grad()
def export_llm_to_hf(model: Any, out_dir: str | Path, tolerance: float = 1e-4) -> dict[str, Any]:
    """Write ``model.llm`` (LoRA merged) and the tokenizer to ``out_dir``; verify logits with ``transformers``.

    Returns:
        dict: ``{"path", "max_abs_logit_diff"}``.

    Raises:
        RuntimeError: if the exported model's logits differ from the Megatron student's by more than ``tolerance``.
    """
    from transformers import AutoModelForCausalLM

    hf_state = megatron_to_hf(model.llm.cfg, merged_llm_state(model.llm))
    out = write_hf_checkpoint(out_dir, model.llm.cfg.to_hf(), hf_state)
    model.tokenizer.save_pretrained(str(out))
    reference = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = model.tokenizer(PARITY_TEXT, return_tensors="pt", add_special_tokens=False).input_ids
    was_training = model.llm.training
    model.llm.eval()
    diff = (reference(ids).logits - model.llm(input_ids=ids.to(model.device)).float().cpu()).abs().max().item()
    model.llm.train(was_training)
    if diff > tolerance:
        raise RuntimeError(f"exported {out}: max |logit difference| {diff:.2e} vs the Megatron model exceeds "
                           f"{tolerance}")
    return {"path": str(out), "max_abs_logit_diff": diff}
