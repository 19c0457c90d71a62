"""The megatron-core CPU patches are active without CUDA and step aside when CUDA is present."""

from __future__ import annotations

import pytest
import torch

from nemo_salad.llm import LLMConfig, MegatronLLM
from nemo_salad.llm.cpu import cpu_mode, ensure_cpu_support

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def test_patches_install_on_cpu():
    assert cpu_mode() and ensure_cpu_support()
    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(4)
    assert mask.device.type == "cpu" and torch.equal(mask, torch.ones(4, 4, dtype=torch.bool).triu(1))


def test_patched_functions_defer_to_megatron_when_cuda_is_present(monkeypatch):
    """With CUDA reported, each patched function runs megatron's original code (which needs a real GPU)."""
    ensure_cpu_support()
    from megatron.core import utils as mcore_utils
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.transformer.utils import get_default_causal_mask

    rope = RotaryEmbedding(kv_channels=8, rotary_percent=1.0, rotary_base=77, use_cpu_initialization=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ensure_cpu_support() is False
    with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA|cuda"):
        get_default_causal_mask(3)
    with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA|cuda"):
        mcore_utils.GlobalMemoryBuffer().get_tensor((2, 2), torch.float32, "t")
    with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA|cuda"):
        rope(5)


def test_rope_on_cpu_matches_the_formula():
    ensure_cpu_support()
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    d, base, n = 8, 1e6, 6
    emb = RotaryEmbedding(kv_channels=d, rotary_percent=1.0, rotary_base=base, use_cpu_initialization=True)(n)
    inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    expected = torch.cat([angles, angles], -1)[:, None, None, :]
    assert emb.shape == (n, 1, 1, d)
    assert torch.allclose(emb.double(), expected, atol=1e-6)


def test_megatron_forward_without_explicit_mask_runs_on_cpu():
    """megatron's own GPTModel.forward with attention_mask=None uses the patched default causal mask."""
    llm = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="local").eval()
    ids = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        out = llm.gpt(input_ids=ids, position_ids=None, attention_mask=None)
        assert torch.allclose(out, llm(input_ids=ids), atol=1e-6)


def test_unified_memory_stand_in_without_cuda():
    """megatron's unified-memory module (a CUDA JIT build at import) is replaced by a CPU stand-in."""
    import importlib

    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # conftest.py already did, before megatron-core was first imported
    mod = importlib.import_module("megatron.core.inference.unified_memory")
    assert mod.has_unified_memory is False
    with pytest.raises(RuntimeError, match="needs CUDA"):
        mod.create_unified_mempool()
