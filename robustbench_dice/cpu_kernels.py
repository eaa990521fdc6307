"""Pin the CPU kernels' instruction set, so that a run's numbers do not depend on whether the CPU has AVX-512.

PyTorch picks its vectorised CPU kernels by the widest instruction set the
processor has. AVX-512 kernels reduce in a different order from AVX2 ones, so
the same scenario and seed round differently on an AVX-512 machine, and a
long training run amplifies that: a stored accuracy can move by a test sample.
The committed results are computed with AVX2 kernels, which every x86-64
machine of the last decade has. Before torch runs its first kernel, this
module asks PyTorch (``ATEN_CPU_CAPABILITY``), MKL (``MKL_CBWR``) and oneDNN
(``ONEDNN_MAX_CPU_ISA``) for AVX2.

A variable already set in the environment wins: ``ATEN_CPU_CAPABILITY=avx512``
(with ``MKL_CBWR`` and ``ONEDNN_MAX_CPU_ISA`` unset or widened too) gives the
widest kernels, at the price of numbers that differ from the committed ones.
Nothing is pinned on processors without AVX2 or outside x86-64, where these
kernels do not exist. Each record stores the kernels its run used
(``versions["cpu_capability"]``).

PyTorch fixes its choice at the first kernel it runs: a program that computes
with torch before it imports robustbench_dice keeps the widest kernels.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def has_avx2(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> bool:
    """Whether this is an x86-64 processor with AVX2 and FMA (read from ``/proc/cpuinfo``; False where unreadable)."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    try:
        with cpuinfo.open() as lines:  # every core repeats its block: the first flags line is enough
            flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def pin_instruction_set(
    environ: MutableMapping[str, str] = os.environ, supported: bool | None = None
) -> dict[str, str]:
    """Set each of :data:`PINNED` in ``environ`` that is not set already, where the processor has AVX2.

    Returns the variables it set (empty where it set none).
    """
    if not (has_avx2() if supported is None else supported):
        return {}
    added = {key: value for key, value in PINNED.items() if key not in environ}
    environ.update(added)
    return added


def active_instruction_set() -> str:
    """The instruction set of the CPU kernels torch runs (``AVX2``, ``AVX512``, ``DEFAULT``, ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())
