"""Quantized formats: ctcodec against the current compressed-tensors (0.20), in one run.

Input: real SmolLM2-135M bf16 weights, every Linear weight viewed as rows of 1152 input
features (so group 128 applies; the values and their distribution are the model's), the
decoder layers repeated to reach --copies x 0.27 GB, in shards.

- quantize+pack: W4A16 group 128 (RTN, compressed-tensors' math), file to file: ctcodec's
  `compress_checkpoint` against compressed-tensors' min/max observer, `calculate_qparams`
  and pack-quantized compressor over the same shards (loaded and saved with
  safetensors). Outputs are checked tensor for tensor.
- decode: every format, file to dense tensors in memory: ctcodec's `decompress_file`
  against compressed-tensors' compressor `decompress` per module after `load_file`.
- peak RSS of compressing a multi-GB sharded checkpoint (fresh process, VmHWM).

compressed-tensors runs in a subprocess under its own import path (.ct-current), timed
inside that process, right after ctcodec, on the same files. Ratios are what matter.

    .venv/bin/python benches/bench_quant.py [--copies 4] [--rss-copies 12] [--repeat 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import ctcodec  # noqa: E402
from common import best, shards  # noqa: E402
from realdata import dense_smollm2_folder, scaled_checkpoint  # noqa: E402

FORMATS = [  # (scheme, group size) decoded in the decode table
    ("W4A16", 128), ("W4A16_ASYM", 128), ("W3A16", 128), ("W8A16", 128),
    ("W8A8", None), ("FP8_DYNAMIC", None), ("FP8_BLOCK", None), ("NVFP4A16", None),
]
PAGE = 4096


def reshaped_folder(src: Path, dst: Path, cols: int = 1152) -> Path:
    """The model's weights, each Linear weight viewed as [-1, cols]."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if (dst / "model.safetensors").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    with safe_open(src / "model.safetensors", "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            if k.endswith("proj.weight") and t.numel() % cols == 0:
                t = t.reshape(-1, cols).contiguous()
            out[k] = t
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json",):
        shutil.copy(src / name, dst / name)
    return dst


def run_ct(job: dict) -> list[float]:
    path = ROOT / "bench-data" / "ct_job.json"
    path.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".ct-current"))
    out = subprocess.run([sys.executable, str(ROOT / "benches" / "ct_quant_worker.py"), str(path)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def ct_job(mode: str, src: Path, dst: Path, out_dir: Path, summary: dict, repeat: int) -> dict:
    """A worker job over the modules ctcodec quantized, with the scheme it wrote."""
    qc = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    (group,) = qc["config_groups"].values()
    modules = [st["name"][: -len(".weight")] for st in summary["stats"] if st["compressed"]]
    by_shard: dict[str, list[str]] = {}
    for s in shards(src):
        _, tensors = ctcodec._native.read_header(str(s))
        names = {n for n, _, _ in tensors}
        by_shard[s.name] = [m for m in modules if f"{m}.weight" in names or f"{m}.weight_packed" in names]
    weights = {k: v for k, v in group["weights"].items() if v is not None}
    return {"mode": mode, "src": str(src), "dst": str(dst), "shards": by_shard, "weights": weights,
            "format": group["format"], "repeat": repeat}


def ours_decode(folder: Path) -> None:
    for _, t in ctcodec.decompress_file(folder):
        t.reshape(-1).view(torch.uint8)[::PAGE].sum()


def same_tensors(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    if [s.name for s in shards(a)] != [s.name for s in shards(b)]:
        return False
    for sa, sb in zip(shards(a), shards(b)):
        with safe_open(sa, "pt") as fa, safe_open(sb, "pt") as fb:
            if set(fa.keys()) != set(fb.keys()):
                return False
            for k in fa.keys():
                x, y = fa.get_tensor(k), fb.get_tensor(k)
                if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
                    return False
    return True


def peak_rss_compress(src: Path, dst: Path) -> int:
    code = ("import ctcodec, sys, shutil; shutil.rmtree(sys.argv[2], ignore_errors=True); "
            "ctcodec.compress_checkpoint(sys.argv[1], sys.argv[2], scheme='W4A16'); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--rss-copies", type=int, default=12, help="copies for the peak-RSS run (0 to skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    data = ROOT / "bench-data"
    data.mkdir(exist_ok=True)
    base = reshaped_folder(dense_smollm2_folder(ROOT / "demo-data"), data / "smollm2-1152")
    dense = scaled_checkpoint(base, data / f"smollm2-1152-x{args.copies}", args.copies)
    nbytes = sum(s.stat().st_size for s in shards(dense))
    print(f"input: {dense.relative_to(ROOT)} ({nbytes / 2**30:.2f} GiB bf16, {len(shards(dense))} shards)", flush=True)
    ours_dir, ct_dir = data / "q-ours", data / "q-ct"
    clear = lambda *fs: (lambda: [shutil.rmtree(f, ignore_errors=True) for f in fs])  # noqa: E731

    # Quantize + pack, W4A16 g128.
    clear(ours_dir)()
    summary = ctcodec.compress_checkpoint(dense, ours_dir, scheme="W4A16", group_size=128)  # warms the cache
    t_ours = best(lambda: ctcodec.compress_checkpoint(dense, ours_dir, scheme="W4A16", group_size=128),
                  args.repeat, setup=clear(ours_dir))
    clear(ct_dir)()
    t_ct = min(run_ct(ct_job("compress", dense, ct_dir, ours_dir, summary, min(2, args.repeat))))
    identical = same_tensors(ours_dir, ct_dir)
    quant_bytes = sum(st["bytes_in"] for st in summary["stats"] if st["compressed"])
    res = {
        "dense_gib": nbytes / 2**30,
        "w4a16_quantize": {"ours_s": t_ours, "ct_s": t_ct, "speedup": t_ct / t_ours, "identical": identical,
                           "ours_gib_s": nbytes / t_ours / 2**30, "quantized_weight_gib": quant_bytes / 2**30},
        "decode": {},
    }
    print(f"W4A16 g128 quantize+pack, file to file: ctcodec {t_ours:.2f} s, compressed-tensors {t_ct:.2f} s "
          f"-> {t_ct / t_ours:.1f}x (outputs identical: {identical})", flush=True)

    # The physical floor of decoding: producing the dense bytes in new memory.
    import numpy as np

    block = np.ones(nbytes, np.uint8)
    t_copy = best(lambda: block.copy(), args.repeat)
    del block
    res["fresh_copy_s"] = t_copy
    print(f"copy of the {nbytes / 2**30:.2f} GiB of dense bytes into new memory: {t_copy:.3f} s", flush=True)

    for scheme, group in FORMATS:
        out = data / f"q-{scheme.lower()}"
        clear(out)()
        s = ctcodec.compress_checkpoint(dense, out, scheme=scheme, group_size=group)
        ours_decode(out)  # warm
        t_o = best(lambda: ours_decode(out), args.repeat)
        t_c = min(run_ct(ct_job("decompress", out, out, out, s, min(2, args.repeat))))
        fmt = json.loads((out / "config.json").read_text())["quantization_config"]["format"]
        res["decode"][scheme] = {"format": fmt, "ours_s": t_o, "ct_s": t_c, "speedup": t_c / t_o,
                                 "vs_fresh_copy": t_copy / t_o}
        print(f"decode {scheme:12} ({fmt:22}): ctcodec {t_o:.3f} s, compressed-tensors {t_c:.3f} s -> {t_c / t_o:.1f}x"
              f"  (ctcodec at {t_copy / t_o:.2f}x the fresh copy)", flush=True)
        clear(out)()

    if args.rss_copies:
        big = scaled_checkpoint(base, data / f"smollm2-1152-x{args.rss_copies}", args.rss_copies)
        big_bytes = sum(s.stat().st_size for s in shards(big))
        rss = peak_rss_compress(big, data / "q-rss")
        clear(data / "q-rss")()
        res["peak_rss"] = {"input_gib": big_bytes / 2**30, "shards": len(shards(big)), "peak_rss_mib": rss / 2**20}
        print(f"peak RSS quantizing {big_bytes / 2**30:.2f} GiB in {len(shards(big))} shards: {rss / 2**20:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
