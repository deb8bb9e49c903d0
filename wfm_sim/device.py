"""Device and precision, decided once at the entry point (never a silent fallback)."""

from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> cuda if available else cpu; an unavailable device raises."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was requested but CUDA is not available on this machine; pass device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {device!r} was requested but this machine has {torch.cuda.device_count()} "
                           f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} was requested but MPS is not available; pass device='cpu'")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 is faster."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The CPU's model and the instruction sets that decide speed here: AVX-512, AVX512-BF16, AMX."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"
    bf16 = [x for x, f in (("AVX512-BF16", "avx512_bf16"), ("AMX-BF16", "amx_bf16")) if f in flags]
    return f"{model}, {isa}" + (f" + {' + '.join(bf16)}" if bf16 else ", no native bf16")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32).

    A precision the machine cannot run is refused, naming the machine and what it can use:
    fp16 (no loss scaling here, and 1-3 GFLOP/s on CPUs), bf16 on a CPU without native bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type == "cpu":
            usable = "bf16 (native here) or fp32" if cpu_has_native_bf16() else "fp32"
            raise ValueError(f"precision 'fp16' is unusable on this CPU ({cpu_isa()}): fp16 matmuls run at 1-3 "
                             f"GFLOP/s; use {usable}")
        raise ValueError("precision 'fp16' needs loss scaling, which wfm_sim does not do; use 'bf16' or 'fp32'")
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            raise ValueError(f"precision 'bf16' was requested but this CPU ({cpu_isa()}) has no native bf16 "
                             "(AVX512-BF16 or AMX): its bf16 matmuls run ~100x slower than fp32; use 'fp32' "
                             "(or 'auto', which picks bf16 only where it is native)")
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
