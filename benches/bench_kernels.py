"""GPU benchmarks of ctcodec-kernels, one command on a CUDA machine (about 2-4 minutes on
an H100, most of it compiling and tuning the kernels once per shape):

    python benches/bench_kernels.py [--json out.json] [--quick] [--no-huge]

1. A correctness check of every matmul path and of the decompression on this GPU (the
   kernels are tested on CPU through Triton's interpreter; this is where they first run
   for real). Failures are printed and recorded, and the timings still run.
2. W4A16 / W8A16 (group 128, fp16 activations) against torch fp16 and bf16 matmul
   (F.linear, cuBLAS) for M in {1, 4, 16, 64, 256} and (N, K) from Llama-class layers,
   plus 32768 x 32768 when memory allows. Every contender cycles through enough copies of
   its weight to exceed the L2 cache several times over, so weights come from HBM as in
   a real forward pass; calls are replayed from CUDA graphs so launch overhead is not
   timed. Times are per call, the median of several graph replays.
3. sparse-bitmask (50% sparse) and sparse-24-bitmask bf16 8192 x 8192: host (pinned)
   compressed tensors -> dense on the device, end to end, against copying the dense
   tensor host -> device from pinned memory.

Extra contenders (e.g. a SpQR matvec) plug in with `register_row`; see its docstring.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernels"))  # this checkout's ctcodec_kernels, installed or not

SHAPES = [(4096, 4096), (8192, 8192), (14336, 4096), (28672, 8192)]
HUGE = (32768, 32768)
ROWS = [1, 4, 16, 64, 256]
GROUP = 128
L2_MULTIPLE = 3  # weight bytes each contender cycles through, in L2 sizes

# label -> factory(n, k, m, copies, device) returning one zero-argument callable per
# weight copy (each computes the layer for its copy), or None to skip that shape.
EXTRA_ROWS: dict[str, Callable] = {}


def register_row(label: str, factory: Callable) -> None:
    """Adds a contender to the matmul table. `factory(n, k, m, copies, device)` builds its
    own `copies` weights for an n x k layer and an x of m rows, and returns a list of
    zero-argument callables, one per copy (or None to skip the shape). It is timed like
    the built-in rows: called once each outside capture (compile, tune), then replayed
    from a CUDA graph that cycles through the copies."""
    EXTRA_ROWS[label] = factory


def _copies(bytes_per_copy: int, l2: int) -> int:
    return max(2, min(64, math.ceil(L2_MULTIPLE * l2 / max(bytes_per_copy, 1))))


def time_calls(calls: list[Callable], replays: int = 7, target_ms: float = 3.0) -> float:
    """Microseconds per call, cycling through `calls` inside a CUDA graph."""
    import torch

    for c in calls:  # compile and tune outside capture
        c()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for c in calls:
        c()
    end.record()
    end.synchronize()
    per_pass_ms = max(start.elapsed_time(end), 1e-3)
    loops = max(1, min(200, int(target_ms / per_pass_ms)))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(loops):
            for c in calls:
                c()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times) * 1000 / (loops * len(calls))


def _random_packed(n: int, k: int, bits: int, dtype, device, seed: int):
    """Random pack-quantized tensors (asymmetric, group GROUP) straight on the device."""
    import torch

    from ctcodec_kernels.layout import packed_width

    g = torch.Generator(device=device).manual_seed(seed)
    words = torch.randint(-(2**31), 2**31 - 1, (n, packed_width(k, bits)), generator=g, device=device,
                          dtype=torch.int32)
    groups = -(-k // GROUP)
    scale = (torch.rand(n, groups, generator=g, device=device) * 0.02 + 0.001).to(dtype)
    zp = torch.randint(-(2**31), 2**31 - 1, (packed_width(n, bits), groups), generator=g, device=device,
                       dtype=torch.int32)
    return words, scale, zp


def _clone_weight(w):
    import dataclasses

    return dataclasses.replace(w, qweight=w.qweight.clone(), scales=w.scales.clone(),
                               zeros=None if w.zeros is None else w.zeros.clone())


def check_correctness(device, n: int = 4096, k: int = 4096 + 64) -> list[str]:
    """Every path in every config the tuner can pick (and each kind of weight in one
    config) on this GPU, against torch on the dequantized weight; and the decompression.
    K = 4160 is not a multiple of the kernel block nor of the group; the M values make
    both split-K and the tiled path split K here. Compiles what the timings reuse."""
    import numpy as np
    import torch

    import ctcodec_kernels as ck
    from ctcodec_kernels.tuning import TUNERS

    failures = []
    for bits in (4, 8):
        for asym, act in ((False, False), (True, True)):
            words, scale, zp = _random_packed(n, k, bits, torch.float16, device, seed=bits)
            g_idx = (torch.arange(k, device=device) // GROUP)[torch.randperm(k, device=device)].int() if act else None
            w = ck.prepare(words, scale, bits, GROUP, n, k, weight_zero_point=zp if asym else None,
                           weight_g_idx=g_idx)
            dense = ck.dequantize(w, torch.float16).float()
            for m, path in ((1, "gemv"), (1, "splitk"), (16, "splitk"), (256, "tiled")):
                x = torch.randn(m, k, device=device, dtype=torch.float16)
                ref = x.float() @ dense.T
                configs = TUNERS[path].configs if not asym else TUNERS[path].configs[:1]
                for cfg in configs:
                    y = ck.quant_matmul(x, w, path=path, config=cfg).float()
                    err = ((y - ref).norm() / ref.norm()).item()
                    # fp16 output rounding gives ~3e-4; a wrong code, scale or zero point ~1e-1.
                    if not err < 2e-3:
                        failures.append(f"W{bits} asym={asym} act_order={act} M={m} {path} {cfg}: rel err {err:.2e}")
                print(f"  W{bits} asym={asym} act_order={act} M={m} {path}: {len(configs)} configs checked", flush=True)
    rng = np.random.default_rng(0)
    dense = torch.from_numpy(rng.standard_normal((300, 1000)).astype(np.float32)).bfloat16()
    dense[torch.from_numpy(rng.random((300, 1000)) < 0.5)] = 0
    vals, mask, offs = bitmask_parts(dense)
    got = ck.decompress_bitmask_from_host(vals, mask, offs, list(dense.shape), device=device)
    if not torch.equal(got.cpu().view(torch.int16), dense.view(torch.int16)):
        failures.append("sparse-bitmask decompression differs from the input")
    print(f"  {len(failures)} failures", flush=True)
    return failures


def bitmask_parts(dense):
    """sparse-bitmask tensors of a 2-D tensor (the layout ctcodec and compressed-tensors write)."""
    import numpy as np
    import torch

    keep = dense != 0
    vals = dense[keep].contiguous()
    mask = torch.from_numpy(np.packbits(keep.numpy(), axis=1, bitorder="little"))
    counts = keep.sum(1)
    return vals, mask, torch.cumsum(counts, 0) - counts


def sparse24_parts(dense24):
    import numpy as np
    import torch

    rows, cols = dense24.shape
    keep = torch.zeros(rows, cols, dtype=torch.bool)
    order = dense24.float().abs().reshape(rows, cols // 4, 4).argsort(dim=-1, descending=True, stable=True)
    keep.view(rows, cols // 4, 4).scatter_(2, order[..., :2], True)
    vals = dense24[keep].reshape(rows, cols // 2).contiguous()
    mask = torch.from_numpy(np.packbits(keep.numpy(), axis=1, bitorder="little"))
    return vals, mask


def bench_matmul(shapes, rows, device, l2) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import ctcodec_kernels as ck

    out = []
    for n, k in shapes:
        print(f"  {n} x {k} ...", flush=True)
        entry_rows = {m: {"n": n, "k": k, "m": m} for m in rows}
        contenders: dict[str, tuple[list, Callable]] = {}
        for dtype, label in ((torch.float16, "torch_fp16"), (torch.bfloat16, "torch_bf16")):
            copies = _copies(n * k * 2, l2)
            ws = [torch.randn(n, k, device=device, dtype=dtype) * 0.02 for _ in range(copies)]
            contenders[label] = (ws, lambda x, w: F.linear(x, w), dtype)
        for bits in (4, 8):
            words, scale, zp = _random_packed(n, k, bits, torch.float16, device, seed=n + k + bits)
            base = ck.prepare(words, scale, bits, GROUP, n, k)
            del words, scale, zp
            per = base.qweight.numel() * 4 + base.scales.numel() * 2
            ws = [base] + [_clone_weight(base) for _ in range(_copies(per, l2) - 1)]
            contenders[f"w{bits}"] = (ws, lambda x, w: ck.quant_matmul(x, w), torch.float16)
        for m in rows:
            for label, (ws, fn, dtype) in contenders.items():
                x = torch.randn(m, k, device=device, dtype=dtype)
                entry_rows[m][f"{label}_us"] = time_calls([lambda w=w: fn(x, w) for w in ws])
            for label, factory in EXTRA_ROWS.items():
                calls = factory(n, k, m, _copies(n * k // 2, l2), device)
                if calls:
                    entry_rows[m][f"{label}_us"] = time_calls(calls)
            if m == 1:  # is the GEMV worth its own path? the split-K kernel at M = 1, for comparison
                x = torch.randn(1, k, device=device, dtype=torch.float16)
                ws = contenders["w4"][0]
                entry_rows[m]["w4_splitk_us"] = time_calls([lambda w=w: ck.quant_matmul(x, w, path="splitk")
                                                            for w in ws])
            entry_rows[m]["path"] = ck.choose_path(m)
            r = entry_rows[m]
            print(f"    M={m:4d} fp16 {r['torch_fp16_us']:8.1f} us  bf16 {r['torch_bf16_us']:8.1f} us  "
                  f"W4 {r['w4_us']:8.1f} us  W8 {r['w8_us']:8.1f} us", flush=True)
        out.extend(entry_rows.values())
        del contenders
        torch.cuda.empty_cache()
    return out


def _wall(fn, repeat: int = 7) -> float:
    """Median wall milliseconds of fn() followed by a device synchronize."""
    import torch

    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_decompress(device) -> list[dict]:
    import torch

    import ctcodec_kernels as ck

    rows, cols = 8192, 8192
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(rows, cols, generator=g).bfloat16()
    dense[torch.rand(rows, cols, generator=g) < 0.5] = 0
    vals, mask, offs = (t.pin_memory() for t in bitmask_parts(dense))
    keep = torch.rand(rows, cols // 4, 4, generator=g).argsort(-1) < 2
    dense24 = torch.randn(rows, cols, generator=g).bfloat16() * keep.reshape(rows, cols)
    vals24, mask24 = (t.pin_memory() for t in sparse24_parts(dense24))
    dense_pinned = dense.pin_memory()
    out = []
    copy_ms = _wall(lambda: dense_pinned.to(device, non_blocking=True))
    for label, fn, nbytes in [
        ("sparse-bitmask 50%", lambda: ck.decompress_bitmask_from_host(vals, mask, offs, [rows, cols], device=device),
         vals.numel() * 2 + mask.numel() + offs.numel() * 8),
        ("sparse-24-bitmask", lambda: ck.decompress_sparse24_from_host(vals24, mask24, [rows, cols], device=device),
         vals24.numel() * 2 + mask24.numel()),
    ]:
        ms = _wall(fn)
        got = fn()
        ref = dense if label.startswith("sparse-bitmask") else dense24
        exact = torch.equal(got.cpu().view(torch.int16), ref.view(torch.int16))
        out.append({"format": label, "shape": [rows, cols], "dtype": "bfloat16", "compressed_bytes": nbytes,
                    "dense_bytes": dense.numel() * 2, "ms": ms, "dense_copy_ms": copy_ms, "exact": exact})
        print(f"  {label}: {ms:.2f} ms end to end (dense copy {copy_ms:.2f} ms), "
              f"{nbytes / 2**20:.0f} MiB over the bus, exact={exact}", flush=True)
    return out


def table(device_name: str, rows: list[dict]) -> str:
    extra = [k for k in (rows[0] if rows else {}) if k.endswith("_us") and k not in
             ("torch_fp16_us", "torch_bf16_us", "w4_us", "w8_us", "w4_splitk_us")]
    head = ["N x K", "M", "path", "fp16 us", "bf16 us", "W4 us", "W8 us", "W4 vs fp16", "W8 vs fp16",
            "W4 vs bf16", *[e[:-3] + " us" for e in extra], "W4 split-K us"]
    lines = [f"Device: {device_name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['n']} x {r['k']}", str(r["m"]), r["path"], f"{r['torch_fp16_us']:.1f}",
                 f"{r['torch_bf16_us']:.1f}", f"{r['w4_us']:.1f}", f"{r['w8_us']:.1f}",
                 f"{r['torch_fp16_us'] / r['w4_us']:.2f}x", f"{r['torch_fp16_us'] / r['w8_us']:.2f}x",
                 f"{r['torch_bf16_us'] / r['w4_us']:.2f}x", *[f"{r.get(e, float('nan')):.1f}" for e in extra],
                 f"{r['w4_splitk_us']:.1f}" if "w4_splitk_us" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="two shapes, M in {1, 64}: a smoke run")
    ap.add_argument("--no-huge", action="store_true", help=f"skip {HUGE[0]} x {HUGE[1]}")
    ap.add_argument("--skip-check", action="store_true", help="skip the correctness check")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_kernels.py needs torch (and triton) with a CUDA GPU; torch is not installed.")
        return 2
    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU: torch.cuda.is_available() is False here. Nothing measured.")
        return 2
    import triton

    import ctcodec_kernels as ck

    if not ck.available():
        print("ctcodec_kernels cannot run here (TRITON_INTERPRET set?). Nothing measured.")
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
    shapes, rows = (SHAPES[:2], [1, 64]) if args.quick else (list(SHAPES), list(ROWS))
    free, _total = torch.cuda.mem_get_info(device)
    huge_note = None
    if not args.quick and not args.no_huge:
        need = 4 * HUGE[0] * HUGE[1] * 2 + 4 * HUGE[0] * HUGE[1]  # 2 fp16 + 2 bf16 copies, W4/W8 copies, repack
        if free > need * 1.3:
            shapes.append(HUGE)
        else:
            huge_note = f"{HUGE[0]} x {HUGE[1]} skipped: {free / 2**30:.0f} GiB free, needs ~{need * 1.3 / 2**30:.0f}"
            print(huge_note)
    results = {"device": props.name, "sms": props.multi_processor_count, "l2_bytes": l2,
               "torch": torch.__version__, "triton": triton.__version__, "group_size": GROUP,
               "activation_dtype": "float16", "weights_cycle_l2_multiple": L2_MULTIPLE, "note": huge_note}
    t0 = time.perf_counter()
    if not args.skip_check:
        print("Correctness on this GPU:")
        results["check_failures"] = check_correctness(device)
    print("Matmul (per call, weights from HBM, CUDA graphs):")
    results["matmul"] = bench_matmul(shapes, rows, device, l2)
    print("Decompression to the device:")
    results["decompress"] = bench_decompress(device)
    results["seconds"] = time.perf_counter() - t0
    print()
    print(table(f"{props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
                f"triton {triton.__version__}, W*A16 group {GROUP}, fp16 activations", results["matmul"]))
    print()
    print("| format | dense | over the bus | end to end | dense H2D copy | speedup | exact |")
    print("|---|---|---|---|---|---|---|")
    for d in results["decompress"]:
        print(f"| {d['format']} | {d['shape'][0]} x {d['shape'][1]} bf16 | {d['compressed_bytes'] / 2**20:.0f} MiB "
              f"| {d['ms']:.2f} ms | {d['dense_copy_ms']:.2f} ms | {d['dense_copy_ms'] / d['ms']:.2f}x "
              f"| {d['exact']} |")
    if results.get("check_failures"):
        print("\nCORRECTNESS FAILURES:\n  " + "\n  ".join(results["check_failures"]))
    print(f"\n{results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 1 if results.get("check_failures") else 0


if __name__ == "__main__":
    sys.exit(main())
