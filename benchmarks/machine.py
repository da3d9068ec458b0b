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
