"""Read and write Hugging Face causal-LM checkpoint directories (``config.json`` + safetensors or ``.bin``).

Every failure names the file and what was expected: a missing directory or ``config.json``, unreadable JSON,
a weight file that is truncated or not safetensors, an index that points to a missing shard.
``.bin`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CheckpointError", "read_hf_checkpoint", "read_hf_config", "write_hf_checkpoint"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")


class CheckpointError(ValueError):
    """A checkpoint directory or file is missing, unreadable or inconsistent."""


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """Parse ``<path>/config.json``.

    Raises:
        CheckpointError: if the directory or file is missing or is not a JSON object.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist (expected a Hugging Face model "
                              "directory with config.json and *.safetensors)")
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing (expected the model's Hugging Face config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file} holds a {type(cfg).__name__}, expected a JSON object")
    return cfg


def _weight_files(root: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = root / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index} is not a valid shard index (expected a 'weight_map'): {exc}") from exc
            files = [root / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} lists shard(s) that do not exist: {missing}")
            return files
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (root / single).is_file():
            return [root / single]
    raise CheckpointError(f"no weights in {root}: expected model.safetensors, a sharded "
                          "model.safetensors.index.json, or pytorch_model.bin")


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors raises its own error types; all mean "corrupt or not this format"
        raise CheckpointError(f"cannot read weights from {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return state


def read_hf_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Path]]:
    """Read a Hugging Face model directory.

    Args:
        path (str | Path): directory with ``config.json`` and weights.

    Returns:
        tuple: ``(config, state_dict, origin)`` where ``origin`` maps each tensor name to the file it came from.

    Raises:
        CheckpointError: on any missing or unreadable file, or a tensor name present in two shards.
    """
    root = Path(path)
    config = read_hf_config(root)
    state: dict[str, Tensor] = {}
    origin: dict[str, Path] = {}
    for file in _weight_files(root):
        for name, tensor in _read_weight_file(file).items():
            if name in state:
                raise CheckpointError(f"tensor {name!r} appears in both {origin[name]} and {file}")
            state[name] = tensor
            origin[name] = file
    return config, state, origin


def write_hf_checkpoint(out_dir: str | Path, config: dict[str, Any], state_dict: dict[str, Tensor],
                        copy_tokenizer_from: str | Path | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and tokenizer files, if a source is given).

    Returns:
        Path: the output directory.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    if copy_tokenizer_from is not None:
        src = Path(copy_tokenizer_from)
        for name in _TOKENIZER_FILES:
            if (src / name).is_file():
                (out / name).write_bytes((src / name).read_bytes())
    return out
