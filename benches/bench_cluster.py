"""Compression on a Ray cluster against one process, on this machine.

    .venv/bin/python benches/bench_cluster.py [--nsamples 128] [--seqlen 128] [--group-size 64] [--copies 12]
                                              [--only calibrated|shards] [--json F]

- calibrated: GPTQ W4A16 (group 64: SmolLM2's hidden size, 576, is not a multiple of
  128, so with W4A16's default groups only down_proj would be quantized) of the real SmolLM2-135M, one process (2 torch
  threads) and on `local:1` / `local:2` (Ray workers of one CPU each): wall time, the
  per-phase split (forward, reduce, solve, propagate) and byte identity of the outputs;
- shard-parallel: W4A16 round-to-nearest of a multi-GB sharded checkpoint (SmolLM2's
  layers repeated, 512 MiB shards) on local:1 and local:2.

Speed-ups are local:2 over local:1 (the same code, one CPU per worker: torch runs each
unit of work on one thread anyway, and RAYON_NUM_THREADS=1 keeps the Rust codec on one).
Ray is started before each timed run (its start-up, a few seconds, is given apart).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import ctcodec  # noqa: E402
from ctcodec.calibrate import compress_calibrated  # noqa: E402
from realdata import scaled_checkpoint  # noqa: E402


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def timed(fn) -> tuple[float, dict]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def on(cluster, fn):
    """Runs fn(cluster_arg) in one process (cluster None) or on a fresh local Ray
    instance of N one-CPU workers; returns (seconds, Ray start-up seconds, result)."""
    if cluster is None:
        return _one(fn)
    import ray

    n = int(cluster.split(":")[1])
    start, _ = timed(lambda: ray.init(address="local", num_cpus=n, include_dashboard=False, log_to_driver=False,
                                      runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}}))
    try:
        wall, out = timed(lambda: fn("auto"))
    finally:
        ray.shutdown()
    return wall, start, out


def _one(fn):
    wall, out = timed(lambda: fn(None))
    return wall, 0.0, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--copies", type=int, default=12, help="layer copies for the sharded checkpoint")
    ap.add_argument("--only", choices=("calibrated", "shards"), default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = ROOT / "bench-data" / "cluster"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = ROOT / "demo-data" / "smollm2-135m-bf16"
    if not model.is_dir():
        raise SystemExit("run scripts/demo.sh first (it fetches SmolLM2-135M into demo-data/)")
    results: dict = {"calibrated": {}, "shards": {}}

    if args.only != "shards":
        calibrated(args, model, work, results)
    if args.only != "calibrated":
        shard_parallel(args, model, work, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def calibrated(args, model: Path, work: Path, results: dict) -> None:
    kw = dict(algorithm="gptq", scheme="W4A16", group_size=args.group_size, nsamples=args.nsamples,
              seqlen=args.seqlen)
    results["calibrated"]["workload"] = {"nsamples": args.nsamples, "seqlen": args.seqlen,
                                         "group_size": args.group_size}
    print(f"calibrated: GPTQ W4A16 g{args.group_size} of {model.name}, {args.nsamples} x {args.seqlen} tokens",
          flush=True)
    for name, cluster in (("one process", None), ("local:1", "local:1"), ("local:2", "local:2")):
        out = work / name.replace(" ", "-").replace(":", "")
        wall, start, s = on(cluster, lambda c: compress_calibrated(model, out, cluster=c, **kw))
        phases = {k: round(v, 2) for k, v in s["phases"].items()}
        results["calibrated"][name] = {"wall_s": round(wall, 2), "calibration_s": round(s["calibration_seconds"], 2),
                                       "phases_s": phases, "ray_start_s": round(start, 2)}
        print(f"  {name:12s} {wall:7.1f} s wall (+{start:.1f} s Ray start), phases {phases}", flush=True)
    ref = folder_bytes(work / "one-process")
    for name in ("local1", "local2"):
        results["calibrated"][f"identical_{name}"] = folder_bytes(work / name) == ref
    c = results["calibrated"]
    c["speedup_2_over_1"] = round(c["local:1"]["wall_s"] / c["local:2"]["wall_s"], 2)
    c["speedup_2_over_1_calibration"] = round(c["local:1"]["calibration_s"] / c["local:2"]["calibration_s"], 2)
    print(f"  identical to one process: local:1 {c['identical_local1']}, local:2 {c['identical_local2']}; "
          f"local:2 / local:1 speed-up {c['speedup_2_over_1']}x (calibration only "
          f"{c['speedup_2_over_1_calibration']}x)", flush=True)


def shard_parallel(args, model: Path, work: Path, results: dict) -> None:
    big = scaled_checkpoint(model, ROOT / "bench-data" / f"smollm2-x{args.copies}", args.copies)
    size = sum(p.stat().st_size for p in big.glob("*.safetensors"))
    n_shards = len(list(big.glob("*.safetensors")))
    print(f"shard-parallel: W4A16 g{args.group_size} of {big.name} ({size / 2**30:.2f} GiB, {n_shards} shards)", flush=True)
    for name, cluster in (("one process", None), ("local:1", "local:1"), ("local:2", "local:2")):
        out = work / f"shards-{name.replace(' ', '-').replace(':', '')}"
        wall, start, _ = on(cluster, lambda c: ctcodec.compress_checkpoint(big, out, scheme="W4A16",
                                                                                   group_size=args.group_size,
                                                                                   cluster=c))
        results["shards"][name] = {"wall_s": round(wall, 2), "ray_start_s": round(start, 2)}
        print(f"  {name:12s} {wall:7.2f} s (+{start:.1f} s Ray start)", flush=True)
    sh = results["shards"]
    sh["speedup_2_over_1"] = round(sh["local:1"]["wall_s"] / sh["local:2"]["wall_s"], 2)
    sh["identical"] = folder_bytes(work / "shards-local2") == folder_bytes(work / "shards-one-process")
    sh["input_gib"], sh["shards"] = round(size / 2**30, 2), n_shards
    print(f"  local:2 / local:1 speed-up {sh['speedup_2_over_1']}x; identical {sh['identical']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
