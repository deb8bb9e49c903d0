"""Shared benchmark helpers: the machine's own matmul peak (so figures read as ratios) and timing."""

from __future__ import annotations

import json
import os
import platform
import time

import torch


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 2.0) -> float:
    """Measured GFLOP/s of an ``n x n`` matmul in ``dtype`` on the CPU (or the current GPU)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time (s) of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_description() -> str:
    """CPU model and the instruction sets that decide speed here (figures differ by about 2x
    between the AVX2-only and AVX-512 + bf16 machines this project runs on)."""
    from wfm_sim.device import cpu_isa

    return cpu_isa()


def machine() -> dict:
    return {"cpu": cpu_description(), "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(), "torch": torch.__version__,
            "platform": platform.platform(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "fp32_matmul_gflops": round(matmul_peak(torch.float32), 1),
            "bf16_matmul_gflops": round(matmul_peak(torch.bfloat16), 1)}


def emit(name: str, rows: list[dict], info: dict) -> None:
    """Print a table and one JSON line (for the README and for machines)."""
    print(f"\n== {name} ==  ({info['cuda'] or info['cpu']}; fp32 matmul peak {info['fp32_matmul_gflops']} GFLOP/s, "
          f"bf16 {info['bf16_matmul_gflops']} GFLOP/s, {info['cpu_threads']} threads)")
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))  # every column any row has, in order
        print(" | ".join(f"{k:>14s}" for k in keys))
        for r in rows:
            cells = (r.get(k, "") for k in keys)
            print(" | ".join(f"{v:>14.4g}" if isinstance(v, (int, float)) else f"{str(v):>14s}" for v in cells))
    print("JSON " + json.dumps({"benchmark": name, "machine": info, "rows": rows}))
