from __future__ import annotations

import pytest

from tests.helpers.hf_models import TINY_HF_CONFIGS, save_hf_model


@pytest.fixture(scope="session", params=sorted(TINY_HF_CONFIGS))
def tiny_hf(request, tmp_path_factory):
    """(name, transformers model, checkpoint dir) for each tiny reference architecture."""
    out = tmp_path_factory.mktemp(request.param)
    return request.param, save_hf_model(request.param, out), out


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct as (MegatronLLM, tokenizer, HF directory)."""
    from nemo_salad.llm.smollm2 import load_smollm2, smollm2_hf_dir

    llm, tokenizer = load_smollm2()
    return llm, tokenizer, smollm2_hf_dir()
