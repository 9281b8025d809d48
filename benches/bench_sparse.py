"""sparse-bitmask: ctcodec against compressed-tensors 0.14, safetensors and memcpy, in one run.

Input: a >= 1 GB bf16 checkpoint made of real SmolLM2-135M weights (Linear layers
magnitude-pruned to 50%, decoder layers repeated to reach the size), sharded.
Every figure is the best of --repeat runs, and the table reports ratios measured here,
side by side; absolute speeds on a shared 2-core VM are noise. Files are in the page
cache for every contender (each is read once before timing), except in the cold-cache
rows, where the page cache is emptied before each run (needs root) so reads hit the disk.

    .venv/bin/python benches/bench_sparse.py [--copies 4] [--rss-copies 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import ctcodec  # noqa: E402
from common import best, shards  # noqa: E402
from realdata import pruned_smollm2_folder, scaled_checkpoint  # noqa: E402

PAGE = 4096


def touch(t: torch.Tensor) -> int:
    """Reads one byte of every page, which faults every page of a lazily mapped tensor in."""
    if t.numel() == 0:
        return 0
    b = t.reshape(-1).view(torch.uint8)
    return int(b[::PAGE].sum())


def dense_bytes(folder: Path) -> int:
    from safetensors import safe_open

    n = 0
    for s in shards(folder):
        with safe_open(s, "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                n += int(np.prod(sl.get_shape())) * 2 if sl.get_dtype() in ("BF16", "F16") else 0
    return n


def ct_compress(src: Path, dst: Path, targets: dict[str, set[str]]) -> None:
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.config import BitmaskConfig
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    compressor = BaseCompressor.load_from_registry("sparse-bitmask", config=BitmaskConfig())
    for s in shards(src):
        state = load_file(s)
        out = compressor.compress(state, compression_targets=targets[s.name])
        save_file(out, dst / s.name, metadata={"format": "pt"})


def ct_decompress_all(folder: Path) -> None:
    from compressed_tensors import load_compressed
    from compressed_tensors.config import BitmaskConfig

    for _, t in load_compressed(str(folder), BitmaskConfig()):
        touch(t)


def ours_decompress_all(folder: Path) -> None:
    for _, t in ctcodec.decompress_file(folder):
        touch(t)


def safetensors_dense_all(folder: Path) -> None:
    from safetensors import safe_open

    for s in shards(folder):
        with safe_open(s, "pt") as f:
            for k in f.keys():
                touch(f.get_tensor(k))


def drop_page_cache() -> bool:
    """Empties the page cache (root only), so the next read comes from the disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def memcpy_rates(nbytes: int, repeat: int) -> tuple[float, float]:
    """(warm, fresh) copy rates: into a destination already paged in (the copy itself),
    and into newly allocated memory (what producing new tensors costs, page faults
    included), in bytes per second."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0
    warm = nbytes / best(lambda: np.copyto(dst, src), repeat)
    del dst
    fresh = nbytes / best(lambda: src.copy(), repeat)
    return warm, fresh


def peak_rss_compress(src: Path, dst: Path) -> int:
    """Peak RSS (bytes) of a fresh process that compresses `src`. Read from VmHWM, which
    belongs to the process image: ru_maxrss would also count the parent's memory, which
    the child carries until exec."""
    code = (
        "import ctcodec, sys; ctcodec.compress_checkpoint(sys.argv[1], sys.argv[2]); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=5, help="decoder-layer copies for the >=1 GB checkpoint")
    ap.add_argument("--rss-copies", type=int, default=12, help="copies for the multi-GB peak-RSS run (0 to skip)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per ctcodec figure (compressed-tensors gets fewer: it is slow)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    data = ROOT / "bench-data"
    data.mkdir(exist_ok=True)
    base = pruned_smollm2_folder(ROOT / "demo-data")
    dense = scaled_checkpoint(base, data / f"smollm2-x{args.copies}", args.copies)
    nbytes = sum(s.stat().st_size for s in shards(dense))
    ours_dir, ct_dir = data / "ours-comp", data / "ct-comp"

    def clear(*folders):
        return lambda: [shutil.rmtree(f, ignore_errors=True) for f in folders]

    def ours_compress():
        return ctcodec.compress_checkpoint(dense, ours_dir)

    clear(ours_dir)()
    summary = ours_compress()  # also warms the page cache
    targets: dict[str, set[str]] = {}
    for s in shards(dense):
        _, tensors = ctcodec._native.read_header(str(s))
        names = {n for n, _, _ in tensors}
        targets[s.name] = {st["name"][: -len(".weight")] for st in summary["stats"] if st["compressed"] and st["name"] in names}

    def ct_compress_run():
        ct_compress(dense, ct_dir, targets)

    print(f"input: {dense.relative_to(ROOT)} ({nbytes / 2**30:.2f} GiB bf16, {len(shards(dense))} shards)", flush=True)
    t_ours_c = best(ours_compress, args.repeat, setup=clear(ours_dir))
    t_ct_c = best(ct_compress_run, min(2, args.repeat), setup=clear(ct_dir))
    same = all((ours_dir / s.name).read_bytes() == (ct_dir / s.name).read_bytes() for s in shards(dense))

    comp_bytes = sum(s.stat().st_size for s in shards(ours_dir))
    safetensors_dense_all(dense)
    t_ours_d = best(lambda: ours_decompress_all(ours_dir), args.repeat)
    t_ct_d = best(lambda: ct_decompress_all(ours_dir), min(2, args.repeat))
    t_st = best(lambda: safetensors_dense_all(dense), args.repeat)
    back = data / "ours-back"

    def ours_decompress_files():
        ctcodec.decompress_checkpoint(ours_dir, back)

    t_ours_df = best(ours_decompress_files, args.repeat, setup=clear(back))
    memcpy, memcpy_fresh = memcpy_rates(nbytes, args.repeat)

    cold = drop_page_cache()
    if cold:  # the same reads with the files coming from the disk, not the page cache
        t_ours_cold = best(lambda: ours_decompress_all(ours_dir), args.repeat, setup=drop_page_cache)
        t_st_cold = best(lambda: safetensors_dense_all(dense), args.repeat, setup=drop_page_cache)

    rate = lambda t: nbytes / t / 2**20  # noqa: E731  MiB/s of dense bytes
    res = {
        "dense_gib": nbytes / 2**30,
        "compressed_gib": comp_bytes / 2**30,
        "bytes_identical_to_compressed_tensors": same,
        "compress_s": {"ctcodec": t_ours_c, "compressed_tensors": t_ct_c},
        "decompress_to_memory_s": {"ctcodec": t_ours_d, "compressed_tensors": t_ct_d, "safetensors_dense_read": t_st},
        "decompress_to_files_s": {"ctcodec": t_ours_df},
        "memcpy_mib_s": memcpy / 2**20,
        "memcpy_fresh_mib_s": memcpy_fresh / 2**20,
    }
    if cold:
        res["cold_cache_read_s"] = {"ctcodec_decompress": t_ours_cold, "safetensors_dense_read": t_st_cold}
    print(f"\n| measure (same run, {os.cpu_count()} cores, best of {args.repeat}) | time | dense MiB/s | ratio |")
    print("|---|---|---|---|")
    print(f"| compress: ctcodec | {t_ours_c:.2f} s | {rate(t_ours_c):,.0f} | **{t_ct_c / t_ours_c:.1f}x** compressed-tensors |")
    print(f"| compress: compressed-tensors 0.14 (load, compress, save) | {t_ct_c:.2f} s | {rate(t_ct_c):,.0f} | 1.0x |")
    print(f"| decompress to memory: ctcodec | {t_ours_d:.2f} s | {rate(t_ours_d):,.0f} | **{t_ct_d / t_ours_d:.1f}x** compressed-tensors |")
    print(f"| decompress to memory: compressed-tensors 0.14 | {t_ct_d:.2f} s | {rate(t_ct_d):,.0f} | 1.0x |")
    print(f"| read dense file: safetensors (every page touched) | {t_st:.2f} s | {rate(t_st):,.0f} | ctcodec is **{t_st / t_ours_d:.2f}x** its speed |")
    print(f"| memcpy of the same bytes (numpy, warm destination) | {nbytes / memcpy:.2f} s | {memcpy / 2**20:,.0f} | ctcodec decompress = **{rate(t_ours_d) / (memcpy / 2**20):.2f}x** memcpy |")
    print(f"| memcpy of the same bytes into new memory (numpy copy) | {nbytes / memcpy_fresh:.2f} s | {memcpy_fresh / 2**20:,.0f} | ctcodec decompress = **{rate(t_ours_d) / (memcpy_fresh / 2**20):.2f}x** this copy |")
    print(f"| decompress to files: ctcodec | {t_ours_df:.2f} s | {rate(t_ours_df):,.0f} | |")
    if cold:
        print(f"| cold cache, decompress to memory: ctcodec | {t_ours_cold:.2f} s | {rate(t_ours_cold):,.0f} | **{t_st_cold / t_ours_cold:.2f}x** safetensors |")
        print(f"| cold cache, read dense file: safetensors | {t_st_cold:.2f} s | {rate(t_st_cold):,.0f} | 1.0x |")
    print(f"\nsize {nbytes / 2**20:,.0f} MiB -> {comp_bytes / 2**20:,.0f} MiB ({nbytes / comp_bytes:.2f}x); "
          f"files byte-identical to compressed-tensors' output: {same}")

    if args.rss_copies:
        big = scaled_checkpoint(base, data / f"smollm2-x{args.rss_copies}", args.rss_copies)
        big_bytes = sum(s.stat().st_size for s in shards(big))
        shutil.rmtree(data / "rss-out", ignore_errors=True)
        rss = peak_rss_compress(big, data / "rss-out")
        largest = max(
            int(np.prod(shape)) * 2
            for s in shards(big)
            for _, _, shape in ctcodec._native.read_header(str(s))[1]
        )
        res["peak_rss"] = {"checkpoint_gib": big_bytes / 2**30, "peak_rss_mib": rss / 2**20, "largest_tensor_mib": largest / 2**20}
        print(f"peak RSS compressing a {big_bytes / 2**30:.2f} GiB {len(shards(big))}-shard checkpoint: "
              f"{rss / 2**20:,.0f} MiB (largest tensor {largest / 2**20:,.0f} MiB)")
        shutil.rmtree(data / "rss-out", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
