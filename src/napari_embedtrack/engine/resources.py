"""What this machine offers: free memory and the CPU's model name and flags.

One place for the facts that prediction (tile and batch sizes, mixed precision), training
(mixed precision), the run's memory check and the benchmark report decide by. Qt-free.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["available_memory", "cpu_flags", "cpu_has_native_bf16", "cpu_model_name"]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, frozenset[str]]:
    """(model name, flags) of the first CPU in Linux ``/proc/cpuinfo``; (None, {}) elsewhere."""
    name, flags = None, frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if name is not None and flags:
                    break
    except OSError:
        pass
    return name, flags


def cpu_model_name() -> str | None:
    """The CPU's model name (Linux), else None."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty elsewhere."""
    return _cpuinfo()[1]


def cpu_has_native_bf16() -> bool:
    """True if this CPU reports AVX512-BF16 or AMX-BF16.

    Only such CPUs run bf16 convolutions faster than fp32 (about 2.3x); on AVX2-only CPUs
    bf16 autocast is about 9x slower for inference and 10-50x for a training step
    (docs/benchmarks.md). Other systems: False.
    """
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def available_memory() -> int | None:
    """Bytes of memory this process can still use: Linux ``MemAvailable``, lowered by a
    cgroup (container, batch job) limit; None where neither is known."""
    known = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap = Path(limit).read_text().strip()
            used = int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            known.append(max(int(cap) - used, 0))
    return min(known) if known else None
