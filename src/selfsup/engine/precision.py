"""Which precision a run trains in: ``precision: auto`` made concrete for the device."""

from __future__ import annotations

import torch

__all__ = ["cpu_computes_bf16", "gpu_computes_bf16", "resolve_precision"]


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AMX or AVX512-BF16; read from /proc/cpuinfo,
    so False off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def gpu_computes_bf16() -> bool:
    """Whether the GPU computes bfloat16 natively (Ampere and later), not by emulation as
    ``torch.cuda.is_bf16_supported()`` also counts on a V100 or T4, where it is slower than
    fp32."""
    if torch.version.hip:
        return torch.cuda.is_bf16_supported()
    major, _ = torch.cuda.get_device_capability(0)
    return major >= 8


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``precision``, with ``"auto"`` made concrete: ``"bf16-mixed"`` on a GPU that supports
    bfloat16 or a CPU that computes it natively (:func:`cpu_computes_bf16`), else ``"32-true"``.
    bf16 autocast is 2.2-2.4x faster than fp32 for SimCLR on an AMX CPU (benchmarks/RESULTS.md)
    and within its tolerance of fp32's losses and gradients (tests/engine/test_precision.py)."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return "bf16-mixed" if gpu_computes_bf16() else "32-true"
    if accelerator in ("auto", "cpu") and cpu_computes_bf16():
        return "bf16-mixed"
    return "32-true"
