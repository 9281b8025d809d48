"""What the benchmarks share: best-of-N timing and shard listing."""

from __future__ import annotations

import time
from pathlib import Path


def best(fn, repeat: int, setup=None) -> float:
    """Best wall time of `repeat` calls; `setup` (untimed) runs before each."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))
