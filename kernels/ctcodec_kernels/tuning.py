"""A small autotuner: each path has a short explicit list of configs; the first call with a
new shape key times them (triton.testing.do_bench, which flushes L2 between runs) and keeps
the fastest. Under the interpreter, during CUDA graph capture, or with
CTCODEC_KERNELS_TUNE=0 the first config is used without timing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Hashable

from ._runtime import interpreting


@dataclass(frozen=True)
class Config:
    block_n: int
    num_warps: int
    num_stages: int = 1
    block_m: int = 16
    unroll: int = 1  # GEMV: kernel blocks per loop iteration
    group_m: int = 8  # tensor-core paths: tile rows walked together (L2 reuse)
    split: bool = True  # tensor-core paths: split K when output tiles are fewer than SMs
    whole_block: bool = False  # tensor-core paths, fp16 dequant: one dot per kernel block
    swap_ab: bool = False  # tensor-core paths: W x^T, the weight as the MMA's A operand
    dense: bool = False  # tiled path: decode the whole weight, then torch.matmul (cuBLAS)
    tensor_cores: bool = False  # GEMV and split-K: the tensor-core GEMV (gemv_tc.py), fp16 x or bf16 x with 4 bits
    bit_unpack: bool = False  # tiled and split-K: gemm_tc.py, the weight bit-unpacked in registers (wgmma's A)


def _tuning_switched_off() -> bool:
    return interpreting() or os.environ.get("CTCODEC_KERNELS_TUNE", "1") == "0"


def _capturing() -> bool:
    import torch

    return torch.cuda.is_current_stream_capturing()


class Tuner:
    def __init__(self, name: str, configs: list[Config]):
        self.name = name
        self.configs = configs
        self.best: dict[Hashable, Config] = {}

    def pick(self, key: Hashable, run: Callable[[Config], None]) -> Config:
        """The config to use for `key`; times the candidates (each through `run`) once."""
        best = self.best.get(key)
        if best is not None:
            return best
        if len(self.configs) == 1 or _tuning_switched_off():
            self.best[key] = self.configs[0]  # kept: the next call for this shape decides nothing
            return self.configs[0]
        if _capturing():  # no timing inside a CUDA graph capture: the first config, tuned later
            return self.configs[0]
        from triton.testing import do_bench

        timings, errors = [], []
        for cfg in self.configs:
            try:
                timings.append((do_bench(lambda: run(cfg), warmup=5, rep=20), cfg))
            except Exception as e:  # a config the device cannot run (shared memory, registers)
                errors.append(f"{cfg}: {type(e).__name__}: {e}")
        if not timings:
            raise RuntimeError(f"{self.name}: no config runs for {key}:\n" + "\n".join(errors))
        self.best[key] = min(timings, key=lambda t: t[0])[1]
        return self.best[key]


# Small lists on purpose: every config is a compile (seconds) and a timing per shape.
# GEMV: 128 to 256 weights per thread per iteration; registers decide how many programs
# share an SM (96 to 255 per thread on sm_90), the tile how much each has in flight.
GEMV = Tuner("gemv", [
    Config(block_n=16, unroll=4, num_warps=4),
    Config(block_n=32, unroll=4, num_warps=4),
    Config(block_n=32, unroll=2, num_warps=4),
    Config(block_n=64, unroll=2, num_warps=8),
    Config(block_n=4, unroll=8, num_warps=2),
])
# fp16 x (and bf16 x with 4-bit codes) can also take the tensor-core GEMV: 2.3-3.0
# instructions per weight on sm_90 instead of 4.2-5.3 (symmetric 4-bit), K split across
# programs for small N. It has not yet run on a GPU, so an untuned call (tuning off, or a
# CUDA graph captured before the shape was tuned) keeps the CUDA-core GEMV, measured on
# an H200; the tuner times both.
GEMV_TC = Tuner("gemv, tensor cores too", [
    GEMV.configs[0],
    Config(block_n=128, num_warps=4, num_stages=3, tensor_cores=True),
    Config(block_n=256, num_warps=8, num_stages=3, tensor_cores=True),
    Config(block_n=64, num_warps=4, num_stages=3, tensor_cores=True),
    GEMV.configs[1],  # the CUDA-core config with the fewest instructions per weight
])
# Split-K dequantizes a whole block for one mma.sync dot (fewer instructions per weight
# on sm_90 than a dot per code position); the tiled path's wgmma tiles do better per slice.
SPLIT_K = Tuner("split-k", [
    Config(block_m=16, block_n=64, num_warps=4, num_stages=3, whole_block=True),
    Config(block_m=16, block_n=128, num_warps=4, num_stages=3, whole_block=True),
    Config(block_m=32, block_n=64, num_warps=4, num_stages=2, whole_block=True),
])
# The tensor-core GEMV over tiles of up to 16 rows of x (one B column per row and scale
# group): its unpacking (sm_90: about 3 instructions per weight) against split-K's
# decoded weight (4.8-5.6); not first, so an untuned call keeps split-K.
SPLIT_K_TC = Tuner("split-k, tensor-core GEMV too", [
    *SPLIT_K.configs,
    Config(block_m=16, block_n=128, num_warps=4, num_stages=3, tensor_cores=True),
    Config(block_m=4, block_n=128, num_warps=4, num_stages=3, tensor_cores=True),
])
TILED = Tuner("tiled", [
    Config(block_m=64, block_n=128, num_warps=4, num_stages=3),
    Config(block_m=128, block_n=128, num_warps=8, num_stages=2),  # 3 stages: 237 KB of shared memory
    Config(block_m=128, block_n=64, num_warps=4, num_stages=3),
    Config(block_m=64, block_n=64, num_warps=4, num_stages=4),
    # The weight as wgmma's A operand from registers: no shared-memory round trip or
    # barrier for it, only x goes through shared memory (compiled for sm_90, not timed).
    Config(block_m=64, block_n=128, num_warps=4, num_stages=3, swap_ab=True),
    Config(block_m=128, block_n=128, num_warps=8, num_stages=3, swap_ab=True),
    # Decode then cuBLAS: one extra write and read of the dense weight, which large M
    # (prefill) amortizes; a bound on how far below dense a W4A16 prefill can fall.
    Config(block_n=0, num_warps=0, dense=True),
])
# The weight unpacked by the tensor-core GEMV's bit tricks and scaled in x's dtype, as
# wgmma's A operand from registers (gemm_tc.py): sm_90, symmetric 4-bit fp16, 3.6-3.9
# instructions per weight with no shared-memory store of the weight, against 5.3 for the
# tiled configs above. BLOCK_N is 64 per warpgroup (a warpgroup's wgmma covers 64 rows).
# Not first: an untuned call keeps the tiled kernel.
TILED_TC = Tuner("tiled, bit-unpacked weight too", [
    *TILED.configs,
    Config(block_m=64, block_n=64, num_warps=4, num_stages=3, bit_unpack=True),
    Config(block_m=64, block_n=128, num_warps=8, num_stages=4, bit_unpack=True),
    Config(block_m=128, block_n=128, num_warps=8, num_stages=3, bit_unpack=True),
    Config(block_m=128, block_n=64, num_warps=4, num_stages=4, bit_unpack=True),
])
# Split-K's rows (2-32) in the bit-unpacked GEMM with 16- or 32-row tiles: its unpacking
# does not grow with the rows as the tensor-core GEMV's B columns do (sm_90, symmetric
# 4-bit: 3.7 per weight at 127 registers, against 4.2 at 255 for 16-row GEMV tiles).
SPLIT_K_UNPACKED = Tuner("split-k, tensor-core GEMV and bit-unpacked GEMM too", [
    *SPLIT_K_TC.configs,
    Config(block_m=16, block_n=64, num_warps=4, num_stages=4, bit_unpack=True),
    Config(block_m=32, block_n=64, num_warps=4, num_stages=3, bit_unpack=True),
])
TUNERS = {"gemv": GEMV, "splitk": SPLIT_K, "tiled": TILED}


def tuner_for(path: str, tensor_core_gemv: bool, unpacked_gemm: bool) -> Tuner:
    """The tuner of a path, with the tensor-core GEMV and the bit-unpacked GEMM in its list
    where they take the weight and x (`matmul.tensor_core_gemv_takes`, `unpacked_gemm_takes`)."""
    if path == "gemv":
        return GEMV_TC if tensor_core_gemv else GEMV
    if path == "splitk":
        return SPLIT_K_UNPACKED if unpacked_gemm else SPLIT_K_TC if tensor_core_gemv else SPLIT_K
    return TILED_TC if unpacked_gemm else TILED
