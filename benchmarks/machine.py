"""What a speed benchmark ran on: timings differ several-fold across CPU vector capabilities."""

from __future__ import annotations

from objdecomp.runs import hardware


def native_bf16() -> bool:
    """bf16 runs in hardware: on the GPU, or on a CPU with AVX-512 BF16 / AMX."""
    info = hardware()
    return bool(info.get("gpus")) or bool(info["cpu_native_bf16"])


def machine_line() -> str:
    """One comment line: processor capability, bf16 support, torch, GPU (from ``hardware()``)."""
    info = hardware()
    bf16 = "yes" if info["cpu_native_bf16"] else "no (bf16 is emulated, slow)"
    gpus = f", GPU {', '.join(info['gpus'])}" if info.get("gpus") else ""
    return (f"# {info['platform']}, torch {info['torch']}, CPU capability "
            f"{info['cpu_capability']}, native bf16 {bf16}{gpus}")


def matmul_gflops(device: str = "cpu", size: int = 2048, rounds: int = 5) -> float:
    """Best measured fp32 GFLOP/s of a large square matmul on the current threads, over
    ``rounds`` rounds of three: the practical ceiling of this device (the best round, since a
    shared host only ever slows it down), against which a step's FLOPs give its time floor."""
    import time

    import torch

    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * 3 / best / 1e9


def sync(device: str) -> None:
    """Wait for the device's queued work, so that wall-clock time measures it (CUDA is async)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
