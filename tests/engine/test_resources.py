"""engine/resources.py: the machine facts prediction and training decide by."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from napari_embedtrack.engine import predict, resources


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_linux_facts_are_read():
    mem = resources.available_memory()
    meminfo = Path("/proc/meminfo").read_text()
    total = int(meminfo.split("MemTotal:")[1].split()[0]) * 1024
    assert mem is not None and 0 < mem <= total
    flags = resources.cpu_flags()
    assert flags and all(" " not in f for f in flags)
    assert resources.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
    if torch.backends.mkldnn.is_available():  # torch's own view agrees with the flags
        assert resources.cpu_has_native_bf16() == bool(
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )


def test_the_cpu_memory_budget_follows_the_available_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(predict, "available_memory", lambda: 400 * 1024**2)
    assert predict._memory_budget(cpu) == 100 * 1024**2
    assert predict.auto_tile((2048, 2048), 256, cpu) < 2048  # 1.2 GB of activations: tiles
    monkeypatch.setattr(predict, "available_memory", lambda: 64 * 1024**3)
    assert predict._memory_budget(cpu) == predict.CPU_BATCH_BYTES
    monkeypatch.setattr(predict, "available_memory", lambda: None)
    assert predict._memory_budget(cpu) == predict.CPU_BATCH_BYTES
