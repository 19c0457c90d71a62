"""Builders of a model's pieces: the pretrained parts named in a model config (LLM, tokenizer, speech encoder)
resolved into modules.

These build ``llm`` and ``modules`` objects, so they sit in ``models`` (above both), not in the stateless ``parts``.

Config conventions (``model.llm`` / ``model.encoder``)::

    llm:
      pretrained: smollm2        # "smollm2" (embedded offline default), a Hugging Face directory, or null
      arch: null                 # preset name, {preset: name, **overrides}, or an LLMConfig mapping
      attention: sdpa
    encoder:
      kind: fastconformer        # fastconformer (default) | whisper | mimi
      pretrained: null           # a .nemo path or NeMo model name; null builds preprocessor/encoder below
      preprocessor: {...}
      encoder: {...}

``kind: whisper`` / ``kind: mimi`` take ``pretrained`` (a local Hugging Face folder, or ``tiny.en`` for the
embedded Whisper) and ``config`` (the architecture, for random init) instead of ``preprocessor`` / ``encoder``:
see :func:`~nemo_salad.modules.whisper_encoder.build_whisper_encoder` and
:func:`~nemo_salad.modules.mimi_encoder.build_mimi_encoder`.

After loading, :func:`resolved_llm_config` / :func:`resolved_encoder_config` give the same sections with the
architecture written out and ``pretrained`` cleared, which is what a ``.nemo`` archive stores: restoring needs
neither the original checkpoint paths nor a download.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_salad.llm import LLMConfig, MegatronLLM

__all__ = ["ENCODER_KINDS", "TOKENIZER_FILES", "build_llm", "build_speech_encoder", "gather_tokenizer_files",
           "llm_source_dir", "load_tokenizer", "resolved_encoder_config", "resolved_llm_config", "tokenizer_files"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def llm_source_dir(pretrained: str | None) -> Path | None:
    """The Hugging Face directory behind ``llm.pretrained`` (building the SmolLM2 cache if needed).

    Raises:
        FileNotFoundError: if ``pretrained`` names a directory that does not exist, naming the config key.
    """
    if not pretrained:
        return None
    if pretrained == "smollm2":
        from nemo_salad.llm.smollm2 import smollm2_hf_dir

        return smollm2_hf_dir()
    if not Path(pretrained).is_dir():
        raise FileNotFoundError(f"model.llm.pretrained={str(pretrained)!r}: no such directory (expected 'smollm2' or "
                                "a local Hugging Face model directory with config.json, weights and tokenizer files)")
    return Path(pretrained)


def tokenizer_files(directory: str | Path, key: str = "model.tokenizer.dir") -> dict[str, str]:
    """The tokenizer files of ``directory``, keyed as ``.nemo`` artifacts (``tokenizer_json``, ...).

    Args:
        directory (str | Path): a folder with ``tokenizer.json`` and/or ``tokenizer_config.json``.
        key (str): the config key that named it, for messages. Default: "model.tokenizer.dir".

    Raises:
        FileNotFoundError: if the folder is missing or holds no tokenizer, naming ``key`` and the folder.

    >>> tokenizer_files("/no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: model.tokenizer.dir='/no/such/folder': no such directory (expected a folder with \
tokenizer.json and tokenizer_config.json)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{key}={str(directory)!r}: no such directory (expected a folder with "
                                "tokenizer.json and tokenizer_config.json)")
    files = {n.replace(".", "_"): str(directory / n) for n in TOKENIZER_FILES if (directory / n).is_file()}
    if "tokenizer_json" not in files and "tokenizer_config_json" not in files:
        raise FileNotFoundError(f"{key}={str(directory)!r}: no tokenizer in this directory (expected tokenizer.json "
                                "and tokenizer_config.json)")
    return files


def _arch(cfg: dict) -> LLMConfig:
    arch = cfg.get("arch")
    if arch is None:
        raise ValueError("model.llm: set `pretrained` (smollm2 or a Hugging Face directory) or `arch` (a preset name "
                         "or an LLMConfig mapping)")
    if isinstance(arch, str):
        return LLMConfig.preset(arch)
    arch = dict(arch)
    return LLMConfig.preset(arch.pop("preset"), **arch) if "preset" in arch else LLMConfig.from_dict(arch)


def _check_expected_arch(expected: LLMConfig, found: LLMConfig, source: Path) -> None:
    """A recipe that names both a checkpoint and its architecture must get that architecture."""
    fields = ("family", "hidden_size", "num_layers", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
              "vocab_size", "tie_embeddings")
    diff = [f"{f}: found {getattr(found, f)}, expected {getattr(expected, f)}" for f in fields
            if getattr(found, f) != getattr(expected, f)]
    if diff:
        raise ValueError(f"{source / 'config.json'} does not describe the architecture model.llm.arch names: "
                         + "; ".join(diff) + " (set model.llm.arch: null to accept any)")


def build_llm(cfg: Any, load_weights: bool = True) -> MegatronLLM:
    """The student LLM of ``model.llm``: pretrained weights, or random init from ``arch``.

    Args:
        cfg: the ``model.llm`` section.
        load_weights (bool): False builds the pretrained model's architecture with random weights (used when
            restoring a ``.nemo``, whose weights are loaded afterwards). Default: True.
    """
    from nemo_salad.llm.hf_checkpoint import read_hf_config
    from nemo_salad.llm.hf_convert import load_hf

    c = _plain(cfg)
    kwargs: dict[str, Any] = {"attention": c.get("attention", "sdpa")}
    source = llm_source_dir(c.get("pretrained"))
    if source is not None:
        found = LLMConfig.from_hf(read_hf_config(source), str(source / "config.json"))
        if c.get("arch") is not None:
            _check_expected_arch(_arch(c), found, source)
        if load_weights:
            return load_hf(source, **kwargs)
    arch = found if source is not None else _arch(c)
    if c.get("params_dtype"):
        arch = LLMConfig.from_dict({**arch.to_dict(), "params_dtype": c["params_dtype"]})
    return MegatronLLM(arch, **kwargs)


def resolved_llm_config(cfg: Any, llm: MegatronLLM) -> dict:
    """``model.llm`` with ``arch`` written out and ``pretrained`` cleared (what a ``.nemo`` stores)."""
    return {**_plain(cfg), "pretrained": None, "arch": llm.cfg.to_dict()}


def load_tokenizer(directory: str | Path):
    """A ``transformers`` tokenizer from a local directory (never a hub).

    Raises:
        FileNotFoundError: naming the directory and the files it should hold.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no tokenizer in {directory}: expected tokenizer.json and tokenizer_config.json")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def gather_tokenizer_files(files: dict[str, str]) -> Path:
    """Copy registered tokenizer artifacts (possibly renamed inside a ``.nemo``) into one directory."""
    out = Path(tempfile.mkdtemp(prefix="salad_tokenizer_"))
    for name in TOKENIZER_FILES:
        src = files.get(name.replace(".", "_"))
        if src:
            shutil.copyfile(src, out / name)
    return out


ENCODER_KINDS = ("fastconformer", "whisper", "mimi")


def build_speech_encoder(cfg: Any, load_weights: bool = True):
    """The speech encoder of ``model.encoder``, chosen by its ``kind`` (default ``fastconformer``).

    ``fastconformer``: a :class:`~nemo_salad.modules.encoder.SpeechEncoder`; with ``pretrained`` set (and
    ``load_weights``), the preprocessor and encoder configs and weights come from that NeMo ASR checkpoint,
    otherwise from the ``preprocessor`` / ``encoder`` configs. ``whisper`` / ``mimi``: see the module docstring.

    Raises:
        ValueError: for an unknown ``kind`` or a section that names no architecture.
    """
    from nemo_salad.modules.encoder import SpeechEncoder, load_pretrained_asr_parts

    c = _plain(cfg)
    kind = c.get("kind") or "fastconformer"
    if kind == "whisper":
        from nemo_salad.modules.whisper_encoder import build_whisper_encoder

        return build_whisper_encoder(c, load_weights=load_weights)
    if kind == "mimi":
        from nemo_salad.modules.mimi_encoder import build_mimi_encoder

        return build_mimi_encoder(c, load_weights=load_weights)
    if kind != "fastconformer":
        raise ValueError(f"model.encoder.kind={kind!r}; expected one of {ENCODER_KINDS}")
    freeze = bool(c.get("freeze", False))
    if c.get("pretrained") and load_weights:
        pre_cfg, enc_cfg, pre_state, enc_state = load_pretrained_asr_parts(str(c["pretrained"]))
        encoder = SpeechEncoder(pre_cfg, enc_cfg, freeze=freeze)
        encoder.preprocessor.load_state_dict(pre_state)
        encoder.encoder.load_state_dict(enc_state)
        return encoder
    if not c.get("preprocessor") or not c.get("encoder"):
        raise ValueError("model.encoder: set `pretrained` (a .nemo path or NeMo name) or both `preprocessor` and "
                         "`encoder` configs")
    return SpeechEncoder(c["preprocessor"], c["encoder"], freeze=freeze)


def resolved_encoder_config(cfg: Any, encoder) -> dict:
    """``model.encoder`` with the architecture written out and ``pretrained`` cleared (what a ``.nemo`` stores)."""
    if hasattr(encoder, "resolved_config"):  # Whisper, Mimi
        return encoder.resolved_config(_plain(cfg))
    return {**_plain(cfg), "pretrained": None, "preprocessor": encoder.preprocessor_cfg,
            "encoder": encoder.encoder_cfg}


def llm_arch(cfg: Any) -> LLMConfig:
    """The architecture ``model.llm`` describes (read from the pretrained checkpoint's ``config.json`` when it names
    one), without building anything."""
    from nemo_salad.llm.hf_checkpoint import read_hf_config

    c = _plain(cfg)
    source = llm_source_dir(c.get("pretrained"))
    if source is not None:
        return LLMConfig.from_hf(read_hf_config(source), str(source / "config.json"))
    return _arch(c)
