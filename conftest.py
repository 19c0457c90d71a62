"""Test-wide settings: one CPU thread, no network, offline Hugging Face, GPU tests skipped without CUDA."""

from __future__ import annotations

import ipaddress
import os
import socket

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on 2 shared cores is 7-60x slower (docs/stack)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from nemo_salad.llm.cpu import guard_unified_memory_import  # noqa: E402

guard_unified_memory_import()  # before any test imports NeMo or megatron-core (importing nemo_salad patches nothing)

torch.set_num_threads(1)

_real_connect = socket.socket.connect


def _loopback_only_connect(self: socket.socket, address, *args, **kwargs):
    """Refuse every connection that leaves the machine: tests must run offline."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address, *args, **kwargs)


socket.socket.connect = _loopback_only_connect  # type: ignore[method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
