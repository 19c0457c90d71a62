"""Make megatron-core 0.15 run on a machine without CUDA.

megatron-core assumes CUDA in four places that the forward pass of a GPT model reaches:

1. ``tensor_parallel.model_parallel_cuda_manual_seed`` seeds CUDA generators. On CPU we install megatron's
   no-op "inference" RNG tracker instead, so dropout draws from torch's default CPU generator.
2. ``RotaryEmbedding.forward`` moves ``inv_freq`` to ``torch.cuda.current_device()`` on first use.
3. ``GlobalMemoryBuffer.get_tensor`` allocates the attention score buffer on the current CUDA device.
4. ``get_default_causal_mask`` (used when ``attention_mask=None``) builds its mask with ``device="cuda"``.

:func:`ensure_cpu_support` patches exactly these, and only when ``torch.cuda.is_available()`` is False, so
GPU runs execute megatron's own code unchanged. Every patched function keeps the original's signature and
falls through to the original whenever CUDA is available, so importing this module on a GPU machine is
harmless. The patches are idempotent.

Distributed checkpoints (``megatron.core.dist_checkpointing``) also call ``torch.cuda.synchronize()`` after
staging tensors to host memory and put a failure flag on ``torch.cuda.current_device()`` before broadcasting it.
:func:`cpu_dist_checkpointing` makes both work on CPU for the duration of a save or load only (a no-op
synchronize, the CPU as current device); with CUDA it changes nothing.

NeMo-2's ``MegatronStrategy`` pieces around the model (``MegatronParallel``, megatron DDP, the distributed optimizer,
``trainer.fit`` under the strategy) assume CUDA in a few more places: they allocate a handful of tensors with
``device="cuda"``, create CUDA streams, move loaded tensors between CUDA devices and check ``tensor.type()`` against
CUDA type names. :func:`cuda_standins` maps exactly that to the CPU for the duration of a block (tests, and the CPU
dry run of ``benchmarks/gpu_check.py``): it changes where tensors live, not what is computed.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterator
from functools import lru_cache, reduce
from typing import Any
from unittest import mock

import torch

__all__ = ["cpu_dist_checkpointing", "cpu_mode", "cuda_standins", "ensure_cpu_support",
           "guard_unified_memory_import", "seed_model_parallel_rng"]

_INSTALLED = False


def cpu_mode() -> bool:
    """Return True when megatron-core must run without CUDA.

    >>> isinstance(cpu_mode(), bool)
    True
    """
    return not torch.cuda.is_available()


def _rope_embedding(rope: Any, max_seq_len: int, offset: int) -> torch.Tensor:
    """RoPE angles for positions ``offset .. offset + max_seq_len`` on the device of ``inv_freq``.

    Returns:
        torch.Tensor: ``(S, 1, 1, D)`` angles, laid out as megatron-core's ``RotaryEmbedding.forward``.
    """
    freqs = rope.get_freqs_non_repeated(max_seq_len, offset)  # (S, D/2)
    if not rope.rotary_interleaved:
        emb = torch.cat((freqs, freqs), dim=-1)
    else:
        emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
    return emb[:, None, None, :]


def _patch_rotary_embedding() -> None:
    from megatron.core.models.common.embeddings import rotary_pos_embedding as rpe

    cls = rpe.RotaryEmbedding
    original: Callable[..., torch.Tensor] = cls.forward

    @lru_cache(maxsize=32)
    def forward(self: Any, max_seq_len: int, offset: int = 0, packed_seq: bool = False) -> torch.Tensor:
        if torch.cuda.is_available():
            return original(self, max_seq_len, offset, packed_seq)
        emb = _rope_embedding(self, max_seq_len, offset)
        cp_group = getattr(self, "cp_group", None)
        if cp_group is not None and cp_group.size() > 1 and not packed_seq:
            emb = rpe.get_pos_emb_on_this_cp_rank(emb, 0, cp_group)
        return emb

    forward.__wrapped_original__ = original  # type: ignore[attr-defined]
    cls.forward = forward


def _patch_global_memory_buffer() -> None:
    from megatron.core import utils as mcore_utils

    cls = mcore_utils.GlobalMemoryBuffer
    original = cls.get_tensor

    def get_tensor(self: Any, tensor_shape: Any, dtype: torch.dtype, name: str, mem_alloc_context: Any = None):
        if torch.cuda.is_available():
            return original(self, tensor_shape, dtype, name, mem_alloc_context)
        numel = reduce(operator.mul, tensor_shape, 1)
        buf = self.buffer.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device="cpu", requires_grad=False)
            self.buffer[(name, dtype)] = buf
        return buf[:numel].view(*tensor_shape)

    cls.get_tensor = get_tensor


def _patch_default_causal_mask() -> None:
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils as transformer_utils

    original = transformer_utils.get_default_causal_mask

    def get_default_causal_mask(sq: int) -> torch.Tensor:
        """Upper-triangular boolean mask ``(sq, sq)``; True marks a masked (future) position."""
        if torch.cuda.is_available():
            return original(sq)
        return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)

    transformer_utils.get_default_causal_mask = get_default_causal_mask
    fused_softmax.get_default_causal_mask = get_default_causal_mask


def guard_unified_memory_import() -> bool:
    """Keep ``megatron.core.inference.unified_memory`` from JIT-compiling a CUDA extension without a GPU.

    On import, that module compiles a CUDA allocator with ``torch.utils.cpp_extension.load_inline``. With a
    CUDA build of torch on a machine without a GPU, the compiler's architecture list is empty and the import dies
    with an ``IndexError`` that megatron does not catch (NeMo imports the module indirectly). Without CUDA the
    allocator could not be used anyway, so an equivalent module reporting ``has_unified_memory = False`` is
    registered instead. Does nothing when CUDA is available or the module is already imported.

    Importing ``nemo_salad`` does not call this: an entry point calls it first, before anything imports NeMo or
    megatron-core (every script in ``examples/`` and the tests' ``conftest.py`` do). With the CPU build of torch
    that ``scripts/install.sh`` installs, megatron's own module imports fine and this only avoids its CUDA build.

    Returns:
        bool: True if the stand-in was registered.
    """
    import sys
    import types

    name = "megatron.core.inference.unified_memory"
    if torch.cuda.is_available() or name in sys.modules:
        return False
    module = types.ModuleType(name, "CPU stand-in registered by nemo_salad: unified memory needs CUDA.")
    module.has_unified_memory = False  # type: ignore[attr-defined]

    def create_unified_mempool() -> Any:
        raise RuntimeError("unified memory needs CUDA; this machine has none")

    module.create_unified_mempool = create_unified_mempool  # type: ignore[attr-defined]
    sys.modules[name] = module
    return True


def seed_model_parallel_rng(seed: int) -> None:
    """Seed megatron-core's model-parallel RNG: CUDA trackers on GPU, a no-op tracker on CPU.

    Args:
        seed (int): base seed; megatron derives per-rank seeds from it on GPU.

    >>> seed_model_parallel_rng(1234)
    """
    from megatron.core import tensor_parallel
    from megatron.core.tensor_parallel import random as mcore_random

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    else:
        mcore_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


def ensure_cpu_support() -> bool:
    """Install the CPU patches if CUDA is absent. Safe to call any number of times.

    Returns:
        bool: True if the patches are (now) installed, False on a CUDA machine.

    >>> ensure_cpu_support() == cpu_mode()
    True
    """
    global _INSTALLED
    if not cpu_mode():
        return False
    if not _INSTALLED:
        from megatron.core.tensor_parallel import random as mcore_random

        mcore_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
        _patch_rotary_embedding()
        _patch_global_memory_buffer()
        _patch_default_causal_mask()
        _INSTALLED = True
    return True


@contextlib.contextmanager
def cpu_dist_checkpointing() -> Iterator[None]:
    """Inside the block, ``torch.cuda.synchronize`` does nothing and ``torch.cuda.current_device`` names the CPU —
    only when CUDA is absent (megatron's distributed-checkpoint save/load reach both). Restored on exit.

    >>> with cpu_dist_checkpointing():
    ...     t = torch.zeros(1, device=torch.cuda.current_device() if torch.cuda.is_available() else "cpu")
    """
    if not cpu_mode():
        yield
        return
    saved = torch.cuda.synchronize, torch.cuda.current_device
    torch.cuda.synchronize = lambda device=None: None  # type: ignore[assignment]
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        torch.cuda.synchronize, torch.cuda.current_device = saved


def _cpu(device: Any) -> Any:
    return "cpu" if str(device).startswith("cuda") else device


def _on_cpu(factory: Any, *args: Any, **kwargs: Any) -> Any:
    if "device" in kwargs:
        kwargs["device"] = _cpu(kwargs["device"])
    kwargs.pop("pin_memory", None)
    return factory(*args, **kwargs)


@contextlib.contextmanager
def cuda_standins() -> Iterator[None]:
    """Within the block, megatron-core's and NeMo's ``device="cuda"`` allocations, ``.cuda()`` moves, CUDA streams
    and ``tensor.type()`` checks for ``torch.cuda.*Tensor`` work on the CPU. A no-op when CUDA exists.

    >>> with cuda_standins():
    ...     torch.zeros(2, device="cuda").shape
    torch.Size([2])
    """
    if not cpu_mode():
        yield
        return
    import nemo.collections.asr  # noqa: F401  (TorchScript compiles its functions on import: before the wrapping)

    orig_type = torch.Tensor.type

    def tensor_type(self: torch.Tensor, dtype: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        if dtype is None and not kwargs:
            name = orig_type(self)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        return orig_type(self, dtype, non_blocking, **kwargs)

    orig_to = torch.Tensor.to

    def tensor_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return orig_to(self, *(_cpu(a) if isinstance(a, str | torch.device) else a for a in args), **kwargs)

    with contextlib.ExitStack() as stack:
        for name in ("tensor", "zeros", "empty", "ones", "full"):
            stack.enter_context(mock.patch(f"torch.{name}", functools.partial(_on_cpu, getattr(torch, name))))
        patches = {"torch.Tensor.cuda": lambda self, *a, **k: self, "torch.Tensor.type": tensor_type,
                   "torch.Tensor.to": tensor_to,
                   "torch.cuda.current_device": lambda: "cpu", "torch.cuda.Stream": lambda *a, **k: None,
                   "torch.cuda.stream": lambda *a, **k: contextlib.nullcontext(),
                   "torch.cuda.synchronize": lambda *a, **k: None, "torch.cuda.empty_cache": lambda: None,
                   # moves loaded tensors between CUDA devices; nothing to move on the CPU
                   "nemo.lightning.io.pl._fix_tensors_device": lambda checkpoint: checkpoint}
        for target, new in patches.items():
            stack.enter_context(mock.patch(target, new))
        yield
