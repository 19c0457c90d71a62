from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_llm():
    """A 2-layer random Qwen2-style MegatronLLM (vocab 256, hidden 64), in eval mode."""
    from nemo_salad.llm import LLMConfig, MegatronLLM

    torch.manual_seed(0)
    return MegatronLLM(LLMConfig.preset("tiny-qwen2")).eval()


@pytest.fixture(scope="session")
def byte_tok():
    from tests.helpers.tokenizers import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct as (MegatronLLM, tokenizer)."""
    from nemo_salad.llm.smollm2 import load_smollm2

    llm, tokenizer = load_smollm2()
    return llm.eval(), tokenizer


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A tiny random Llama in Hugging Face format with the byte tokenizer saved next to it."""
    from tests.helpers.hf_models import save_hf_model
    from tests.helpers.tokenizers import byte_tokenizer

    out = tmp_path_factory.mktemp("tiny_llama")
    save_hf_model("llama-gqa-untied", out)
    byte_tokenizer().save_pretrained(str(out))
    return out
