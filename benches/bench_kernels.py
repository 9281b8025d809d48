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

Extra contenders plug in with `register_row` (and their correctness check with
`register_check`); see their docstrings. Registered here: `spqr3`, ctcodec's SpQR at 3
bits, beta1 = beta2 = 16, 1% outliers, random permutation (spqr_matvec, M <= 16), timed
like the other rows (compare with torch_fp16_us), and checked before the timings; and
`spqr3_gather`, its first launch alone (x gathered into the kernel's column order).
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


# label -> check(device) returning failure messages; check_correctness runs each.
EXTRA_CHECKS: dict[str, Callable] = {}


def register_check(label: str, check: Callable) -> None:
    """Adds a correctness check (for a contender added with register_row) to the check
    that runs before the timings: `check(device)` returns a list of failure messages."""
    EXTRA_CHECKS[label] = check


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

    from ctcodec_kernels.word_packing import packed_width

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
    from ctcodec_kernels.tuning import tuner_for

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
                tuner = tuner_for(path, True, True)  # fp16 x and scales: the bit-unpacking kernels' lists too
                # Zero points and act order: the first config, and the first of each other kind.
                configs = tuner.configs if not asym else (
                    tuner.configs[:1] + [c for c in tuner.configs[1:] if c.tensor_cores][:1]
                    + [c for c in tuner.configs[1:] if c.bit_unpack][:1])
                for cfg in configs:
                    try:
                        y = ck.quant_matmul(x, w, path=path, config=cfg).float()
                    except Exception as e:  # noqa: BLE001 - e.g. a tile needing more shared memory than this GPU has
                        print(f"  W{bits} {path} {cfg}: cannot run here: {type(e).__name__}: {str(e)[:120]}")
                        continue
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
    for label, check in EXTRA_CHECKS.items():
        failures += [f"{label}: {f}" for f in check(device)]
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


def bench_matmul(shapes, rows, device, l2, on_shape: Callable[[list], None] = lambda rows: None) -> list[dict]:
    """Per shape and M: torch fp16/bf16, W4, W8 (tuned), and at M = 1 both GEMVs on their
    own; `on_shape(rows so far)` after each shape (the JSON is kept current)."""
    import torch
    import torch.nn.functional as F

    import ctcodec_kernels as ck
    from ctcodec_kernels.tuning import GEMV, GEMV_TC, SPLIT_K, SPLIT_K_TC, SPLIT_K_UNPACKED, TILED, TILED_TC, Tuner

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
            if bits == 4:
                base_w4 = base
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
            ws = contenders["w4"][0]
            x = torch.randn(m, k, device=device, dtype=torch.float16)
            if m == 1:  # is the GEMV worth its own path? the split-K kernel at M = 1, for comparison
                entry_rows[m]["w4_splitk_us"] = time_calls([lambda w=w: ck.quant_matmul(x, w, path="splitk")
                                                            for w in ws])
            # Each kind of kernel on its own (the tuned w4 row takes the fastest), and what
            # the tuner chose: at M = 1 both GEMVs, above it the path's own kernel against
            # the tensor-core GEMV over rows (M <= 32) and the bit-unpacked GEMM.
            path = ck.choose_path(m)
            lists = {"gemv": (("w4_tc_gemv_us", [c for c in GEMV_TC.configs if c.tensor_cores]),
                              ("w4_cuda_core_gemv_us", GEMV.configs)),
                     "splitk": (("w4_unpacked_us", [c for c in SPLIT_K_UNPACKED.configs if c.bit_unpack]),
                                ("w4_tc_gemv_us", [c for c in SPLIT_K_TC.configs if c.tensor_cores]),
                                ("w4_splitk_kernel_us", SPLIT_K.configs)),
                     "tiled": (("w4_unpacked_us", [c for c in TILED_TC.configs if c.bit_unpack]),
                               ("w4_tiled_kernels_us", TILED.configs))}[path]
            for label, configs in lists:
                # The kernels' own tuner over that list alone: the config it would pick.
                cfg = Tuner(label, configs).pick(n, lambda c: ck.quant_matmul(x, base_w4, path=path, config=c))
                entry_rows[m][label] = time_calls([lambda w=w: ck.quant_matmul(x, w, path=path, config=cfg)
                                                   for w in ws])
                entry_rows[m][label.replace("_us", "_config")] = str(cfg)
            entry_rows[m]["path"] = path
            r = entry_rows[m]
            extra = "".join(f"  {label} {r[label + '_us']:8.1f} us" for label in EXTRA_ROWS if label + "_us" in r)
            extra += "".join(f"  {label[3:-3]} {r[label]:.1f} us" for label, _ in lists)
            print(f"    M={m:4d} fp16 {r['torch_fp16_us']:8.1f} us  bf16 {r['torch_bf16_us']:8.1f} us  "
                  f"W4 {r['w4_us']:8.1f} us  W8 {r['w8_us']:8.1f} us{extra}", flush=True)
        out.extend(entry_rows.values())
        on_shape(out)
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
    # where, not a product: randn * 0 is -0.0 for negative draws, which a decoder writes as +0.0.
    dense24 = torch.where(keep.reshape(rows, cols), torch.randn(rows, cols, generator=g).bfloat16(),
                          torch.zeros((), dtype=torch.bfloat16))
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


# SpQR (ctcodec's format), 3 bits, beta1 = beta2 = 16, 3-bit statistics, 1% outliers,
# random permutation: spqr_matvec for M <= 16 (larger M: not timed, see spqr_matvec).
SPQR_PARAMS = {"bits": 3, "beta1": 16, "beta2": 16, "qq_scale_bits": 3, "qq_zero_bits": 3}
SPQR_OUTLIERS = 0.01


def _pack_fields(values, bits: int):
    """int [R, C] fields < 2**bits -> int32 [R, ceil(C*bits/32)], packed LSB-first across
    words (fields straddle words), as ctcodec stores SpQR codes and statistics."""
    import torch

    rows, cols = values.shape
    width = -(-cols * bits // 32)
    pos = torch.arange(cols, device=values.device) * bits
    v = values.to(torch.int64) << (pos % 32)
    out = torch.zeros(rows, width + 1, dtype=torch.int64, device=values.device)
    out.index_add_(1, pos // 32, v & 0xFFFFFFFF)  # disjoint bits: the sum is the OR
    out.index_add_(1, pos // 32 + 1, v >> 32)
    out = out[:, :width]
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def spqr_stored(m: int, n: int, device, seed: int, outliers: float = SPQR_OUTLIERS) -> dict:
    """Random SpQR stored tensors (CSR outliers) of an m x n weight, made on the device."""
    import torch

    p = SPQR_PARAMS
    g = torch.Generator(device=device).manual_seed(seed)
    groups, tiles = -(-n // p["beta2"]), -(-m // p["beta1"])
    step = max(1, (1 << 24) // n)
    codes, rows_l, cols_l = [], [], []
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        q = torch.zeros(r1 - r0, groups * p["beta2"], dtype=torch.int64, device=device)
        q[:, :n] = torch.randint(0, 1 << p["bits"], (r1 - r0, n), generator=g, device=device)
        codes.append(_pack_fields(q, p["bits"]))
        r, c = torch.nonzero(torch.rand(r1 - r0, n, generator=g, device=device) < outliers, as_tuple=True)
        rows_l.append(r + r0)
        cols_l.append(c)
    stat = (torch.randint(0, 8, (m, groups), generator=g, device=device)
            | torch.randint(0, 8, (m, groups), generator=g, device=device) << p["qq_scale_bits"])

    def uniform(lo, hi):
        return torch.rand(tiles, groups, generator=g, device=device) * (hi - lo) + lo

    so = torch.stack([uniform(1e-3, 2e-2), uniform(-3, 1), uniform(0.2, 1.5), uniform(-2, 2)], -1).half()
    rows, cols = torch.cat(rows_l), torch.cat(cols_l)
    values = (torch.randn(rows.numel(), generator=g, device=device) * 0.5).half()
    col_vals = (values.view(torch.int16).to(torch.int64) & 0xFFFF) << 16 | cols
    offsets = torch.zeros(m + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(rows, minlength=m), 0)
    return {
        "weight_shape": torch.tensor([m, n], dtype=torch.int64, device=device),
        "weight_codes": torch.cat(codes),
        "weight_stats": _pack_fields(stat, p["qq_scale_bits"] + p["qq_zero_bits"]),
        "weight_second_order": so.contiguous(),
        "weight_perm": torch.randperm(n, generator=g, device=device).to(torch.int32),
        "weight_outlier_row_offsets": offsets.to(torch.int32),
        "weight_outlier_col_vals": torch.where(col_vals >= 2**31, col_vals - 2**32, col_vals).to(torch.int32),
    }


def spqr_reference(t: dict, dtype):
    """The SpQR decode from its definition (rust/ctcodec/src/spqr/mod.rs), in torch: f32,
    subtraction then multiplication, outliers replace, columns un-permuted, one rounding."""
    import torch

    p = SPQR_PARAMS
    m, n = (int(v) for v in t["weight_shape"].tolist())
    groups = -(-n // p["beta2"])

    def fields(words, count, bits):
        w = torch.cat([words.to(torch.int64) & 0xFFFFFFFF, torch.zeros_like(words[:, :1], dtype=torch.int64)], 1)
        pos = torch.arange(count, device=words.device) * bits
        window = w[:, pos // 32] | (w[:, pos // 32 + 1] << 32)
        return (window >> (pos % 32)) & ((1 << bits) - 1)

    q = fields(t["weight_codes"], n, p["bits"]).float()
    st = fields(t["weight_stats"], groups, p["qq_scale_bits"] + p["qq_zero_bits"])
    so = t["weight_second_order"].float()[torch.arange(m, device=q.device) // p["beta1"]]
    s = so[..., 0] * ((st & ((1 << p["qq_scale_bits"]) - 1)).float() - so[..., 1])
    z = so[..., 2] * ((st >> p["qq_scale_bits"]).float() - so[..., 3])
    grp = torch.arange(n, device=q.device) // p["beta2"]
    w = s[:, grp] * (q - z[:, grp])
    offsets = t["weight_outlier_row_offsets"].long()
    rows = torch.repeat_interleave(torch.arange(m, device=q.device), offsets.diff())
    cv = t["weight_outlier_col_vals"].long()
    w[rows, cv & 0xFFFF] = ((cv >> 16) & 0xFFFF).to(torch.int16).view(torch.float16).float()
    out = torch.empty_like(w)
    out[:, t["weight_perm"].long()] = w
    return out.to(dtype)


def check_spqr(device, n: int = 4096, k: int = 4096 + 64) -> list[str]:
    """dequantize_spqr against the format's definition (bit for bit), and spqr_matvec in
    every config the tuner can pick, for each bucket of rows, against float64. K = 4160 is
    not a multiple of the kernel's unit blocks (the masked path)."""
    import torch

    import ctcodec_kernels as ck
    from ctcodec_kernels.spqr import SPQR_TUNERS

    failures = []
    t = spqr_stored(n, k, device, seed=11)
    w = ck.prepare_spqr(t, SPQR_PARAMS)
    ref32 = spqr_reference(t, torch.float32)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        got = ck.dequantize_spqr(w, dtype)
        if not torch.equal(got.view(torch.int16 if dtype != torch.float32 else torch.int32),
                           ref32.to(dtype).view(torch.int16 if dtype != torch.float32 else torch.int32)):
            failures.append(f"dequantize_spqr {dtype} differs from the format's decode")
    dense = ref32.double()
    for m in (1, 2, 3, 8, 13):
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(m, k, device=device, dtype=dtype)
            ref = x.double() @ dense.T
            bucket = 1 << (m - 1).bit_length()
            for cfg in SPQR_TUNERS[bucket].configs:
                y = ck.spqr_matvec(x, w, config=cfg).double()
                err = ((y - ref).norm() / ref.norm()).item()
                # output rounding gives ~3e-4 (fp16) / ~2e-3 (bf16); a wrong code, group or outlier ~1e-1
                if not err < (2e-3 if dtype == torch.float16 else 1e-2):
                    failures.append(f"spqr_matvec M={m} {dtype} {cfg}: rel err {err:.2e}")
        print(f"  SpQR M={m}: {len(SPQR_TUNERS[bucket].configs)} configs checked", flush=True)
    return failures


def _spqr_row(n: int, k: int, m: int, copies: int, device):
    """The SpQR 3-bit 16x16 contender of the matmul table (M <= 16)."""
    import dataclasses

    import torch

    import ctcodec_kernels as ck

    if m > 16:
        return None
    base = ck.prepare_spqr(spqr_stored(n, k, device, seed=n + k), SPQR_PARAMS)
    ws = [base] + [dataclasses.replace(base, **{f: getattr(base, f).clone() for f in (
        "codes", "stats", "second_order", "kperm", "o_offsets", "o_cols", "o_delta", "o_values")})
        for _ in range(copies - 1)]
    x = torch.randn(m, k, device=device, dtype=torch.float16)
    return [lambda w=w: ck.spqr_matvec(x, w) for w in ws]


def _spqr_gather_row(n: int, k: int, m: int, copies: int, device):
    """The SpQR matvec's first launch alone (x gathered into kernel column order; it does
    not depend on n): how much of spqr3_us is that fixed cost (M <= 16)."""
    import torch

    import ctcodec_kernels as ck
    from ctcodec_kernels import spqr as S

    if m > 16:
        return None
    w = ck.prepare_spqr(spqr_stored(64, k, device, seed=k), SPQR_PARAMS)
    mb = S._bucket(m)  # the matvec's bucket of x rows
    x = torch.randn(m, k, device=device, dtype=torch.float16)
    xk = torch.empty(mb, w.geometry.codes, w.nu, device=device)
    xs = torch.empty(mb, w.geometry.runs, w.nu, device=device)
    return [lambda: S.gather_x(x, w, xk, xs, mb)] * 2


register_row("spqr3", _spqr_row)
register_row("spqr3_gather", _spqr_gather_row)
register_check("spqr3", check_spqr)


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

    def save(key: str | None = None, value=None) -> None:
        # Written after every stage and shape: a run cut short by its time limit keeps what it measured.
        if key is not None:
            results[key] = value
        results["seconds"] = time.perf_counter() - t0
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    if not args.skip_check:
        print("Correctness on this GPU:")
        save("check_failures", check_correctness(device))
    print("Matmul (per call, weights from HBM, CUDA graphs):")
    save("matmul", bench_matmul(shapes, rows, device, l2, on_shape=lambda rows: save("matmul", rows)))
    print("Decompression to the device:")
    save("decompress", bench_decompress(device))
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
        save()
        print(f"wrote {args.json}")
    return 1 if results.get("check_failures") else 0


if __name__ == "__main__":
    sys.exit(main())
