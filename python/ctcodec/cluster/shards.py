"""Shard-parallel runs: each output shard is a Ray task (retried if its worker dies)
that writes the shard atomically; the driver records each one in the run's manifest as
it finishes, so a killed driver resumes where it stopped, as one process does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from . import connected, workers


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="shard", desc="shards")


def run_jobs(out, jobs: list, write_one: Callable, cluster: str, progress: bool = False) -> list:
    """Like `model_folder.write_resumably`, with the shards written on `cluster`'s
    workers; returns each shard's statistics in job order."""
    results: dict[int, object] = {}
    todo = []
    for k, job in enumerate(jobs):
        stats = out.done(Path(job[1]).name)
        if stats is None:
            todo.append(k)
        else:
            results[k] = stats
    with connected(cluster) as ray:
        task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(write_one)
        pending = {task.remote(jobs[k]): k for k in todo}
        bar = _progress(len(jobs), len(results), progress)
        t0, size = time.perf_counter(), 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ready[0])
                stats = ray.get(ready[0])
                out.record(Path(jobs[k][1]).name, stats)
                results[k] = stats
                size += sum(s.get("bytes_in", 0) for s in stats) if isinstance(stats, list) else 0
                if bar is not None:
                    rate = size / max(time.perf_counter() - t0, 1e-9) / 2**20
                    bar.set_postfix_str(f"{rate:,.0f} MiB/s on {workers(ray)} workers")
                    bar.update(1)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if bar is not None:
                bar.close()
    return [results[k] for k in range(len(jobs))]
