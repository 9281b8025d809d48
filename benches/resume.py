"""What resuming saves: a multi-shard bf16 checkpoint compressed once without
interruption, then again with the run SIGKILLed after K shards and the same command
rerun. Reports the resumed and redone shards, the times, and checks the bytes match.

    .venv/bin/python benches/resume.py [--shards 8] [--rows 4096] [--kill-after 6] [--scheme W4A16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

CTCODEC = Path(sys.executable).parent / "ctcodec"


def build(folder: Path, shards: int, rows: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {f"model.layers.{s}.mlp.{p}.weight": rng.standard_normal((rows, 4096), dtype=np.float32)
                   .astype(ml_dtypes.bfloat16) for p in ("up_proj", "gate_proj")}
        save_file(tensors, folder / name)
        weight_map.update({t: name for t in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--kill-after", type=int, default=6)
    ap.add_argument("--scheme", default="W4A16")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        tmp = Path(tmp)
        build(tmp / "dense", a.shards, a.rows)
        size = sum(p.stat().st_size for p in (tmp / "dense").glob("*.safetensors"))
        args = ["compress", str(tmp / "dense"), None, "--scheme", a.scheme, "--group-size", "128", "-q"]
        clean_s, _ = timed([str(CTCODEC), *[str(tmp / "clean") if x is None else x for x in args]])

        out = tmp / "resumed"
        cmd = [str(CTCODEC), *[str(out) if x is None else x for x in args]]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                if len(json.loads((out / ".ctcodec-in-progress.json").read_text())["shards"]) >= a.kill_after:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_s = time.perf_counter() - t0
        kept = len(json.loads((out / ".ctcodec-in-progress.json").read_text())["shards"])
        rerun_s, stdout = timed(cmd)
        same = all((out / p.name).read_bytes() == p.read_bytes() for p in (tmp / "clean").iterdir() if p.is_file())
        same = same and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp / "clean").iterdir())
        print(f"{a.shards} shards, {size / 2**20:,.0f} MiB bf16, {a.scheme}: clean run {clean_s:.2f} s")
        print(f"killed after {killed_s:.2f} s with {kept} shards finished; rerun {rerun_s:.2f} s "
              f"({stdout.strip().splitlines()[-1]})")
        print(f"resumed {kept}, redone {a.shards - kept}; rerun took {rerun_s / clean_s:.0%} of a clean run "
              f"(saved {clean_s - rerun_s:.2f} s); output byte-identical to the clean run: {same}")


if __name__ == "__main__":
    main()
