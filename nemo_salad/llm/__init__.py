"""Megatron-core LLMs of the Llama/Qwen2 family: build, run on CPU or GPU, convert from/to Hugging Face."""

from nemo_salad.llm.config import PRESETS, LLMConfig, UnsupportedModelError
from nemo_salad.llm.model import MegatronLLM, attention_mask_from_padding, build_gpt_model

__all__ = ["LLMConfig", "MegatronLLM", "PRESETS", "UnsupportedModelError", "attention_mask_from_padding",
           "build_gpt_model"]
