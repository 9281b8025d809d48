"""Compiling the kernels for a Hopper GPU (sm_90) without one: triton.compile with an
explicit target runs the whole pipeline down to ptxas (shipped in the triton wheel).

Run as a script (with TRITON_INTERPRET unset: interpreted kernels cannot be compiled), it
compiles every kernel in CASES and prints one JSON line per case; test_compile_hopper.py
does that in a subprocess."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HOPPER = ("cuda", 90, 32)


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_kernel(kernel, types: dict[str, str], constexprs: dict, *, aligned: tuple[str, ...] = (),
                   num_warps: int = 4, num_stages: int = 3):
    """Compiles `kernel` (a @triton.jit function) for sm_90. `types` maps runtime
    arguments to Triton types ("*fp16", "i32", ...); `aligned` names the integer
    arguments a launch would see as multiples of 16 (torch's pointers always are)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: ("constexpr" if n in constexprs else types[n]) for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
             if n not in constexprs and (types[n].startswith("*") or n in aligned)}
    src = ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget(*HOPPER), options={"num_warps": num_warps, "num_stages": num_stages})


def sass(compiled) -> str:
    """The kernel's SASS, from the nvdisasm shipped in the triton wheel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout


def registers(compiled) -> int:
    """Registers per thread (cuobjdump's resource usage); -1 when it cannot tell."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+)", out)
    return int(m.group(1)) if m else -1


def compiled_rows(script: Path, *args: str) -> dict[str, dict]:
    """For a test fixture: runs `script` (one JSON row per compiled case on stdout) in a
    subprocess without TRITON_INTERPRET, and returns its rows by name. Fails the test when
    it fails; skips it when this triton has no explicit-target API."""
    import pytest

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                       timeout=600, cwd=Path(__file__).resolve().parent)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not rows:
        pytest.fail(f"{script.name} {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    api = [row for row in rows if "api_error" in row]
    if api:
        pytest.skip(f"this triton cannot compile for an explicit target here: {api[0]['api_error']}")
    return {row["name"]: row for row in rows}


def main_loop(sass_text: str) -> str:
    """The SASS of the longest loop (a backward branch to a label)."""
    lines = sass_text.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"(\.L_x_\d+):", line))}
    best = ""
    for i, line in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if m and labels.get(m.group(1), i) < i:
            body = "\n".join(lines[labels[m.group(1)]:i + 1])
            best = max(best, body, key=len)
    return best


# Integer/logic instructions, which sm_90 runs at half the issue rate (64 lanes per SM per
# clock against 128 for fp32/fp16 FMA-pipe work and IMAD): a loop heavy in these is bound
# by that pipe before it is bound by issue.
_ALU_OPS = ("LOP3", "SHF", "IADD3", "PRMT", "ISETP", "SEL", "LEA", "PLOP3")


def alu_count(sass_text: str) -> int:
    """Instructions of the integer/logic pipe (_ALU_OPS) in a SASS listing."""
    ops = re.findall(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", sass_text)
    return sum(op in _ALU_OPS for op in ops)


def instruction_count(sass_text: str) -> int:
    """Instructions in a SASS listing (nvdisasm prefixes each with its /*address*/)."""
    return sum(1 for line in sass_text.splitlines() if line.strip().startswith("/*"))


_QUANT = dict(x_ptr="*fp16", qw_ptr="*i32", s_ptr="*bf16", z_ptr="*u8", perm_ptr="*i32")
_INTS = {n: "i32" for n in ("N", "K", "NBLK", "stride_qn", "M", "BLK_PER_SPLIT", "stride_xm", "stride_om",
                            "stride_ps", "MN", "SPLITS", "stride_on", "COLS", "ROW_BYTES", "ROW_NNZ")}
_SPLIT = dict(part_ptr="*fp32", sem_ptr="*i32")  # split_sum.store_tile's workspace
_ALIGNED = ("N", "K", "NBLK", "stride_qn", "stride_xm", "stride_om")


def cases():
    """(name, kernel, types, constexprs, num_warps, num_stages) for every kernel, with the
    configs the tuner can pick."""
    from ctcodec_kernels.bitmask import expand_rows_kernel
    from ctcodec_kernels.decode import dequant_kernel
    from ctcodec_kernels.gemm import dot_kernel
    from ctcodec_kernels.gemm_tc import gemm_tc_kernel
    from ctcodec_kernels.gemv import gemv_kernel
    from ctcodec_kernels.gemv_tc import gemv_tc_kernel
    from ctcodec_kernels.tuning import GEMV, GEMV_TC, SPLIT_K, SPLIT_K_TC, SPLIT_K_UNPACKED, TILED, TILED_TC

    out = []
    # Every config once (4-bit, the heavier unpacking), and each kind of weight once.
    gemv = [(4, False, False, c) for c in GEMV.configs]
    gemv += [(4, True, True, GEMV.configs[0]), (8, True, False, GEMV.configs[0])]
    for bits, zp, perm, c in gemv:
        # Weights one iteration of the main loop covers per thread: BLOCK_N rows x UNROLL
        # blocks of 32 words x 32/bits codes, over the program's threads.
        per_thread = c.block_n * c.unroll * 32 * (32 // bits) // (32 * c.num_warps)
        out.append((f"gemv b{bits} zp={zp} perm={perm} {c.block_n}x{c.unroll} w{c.num_warps}", gemv_kernel,
                    {**_QUANT, **_INTS, "y_ptr": "*fp16"},
                    dict(BITS=bits, GROUP=128, RUN=4, HAS_ZP=zp, HAS_PERM=perm, BLOCK_N=c.block_n,
                         UNROLL=c.unroll, INTERPRET=False, _weights_per_thread=per_thread),
                    c.num_warps, c.num_stages))
    # The tensor-core GEMV (fp16 x): every config with the common weight (symmetric 4-bit,
    # group 128), and each kind of weight with the first config.
    tc = [c for c in GEMV_TC.configs if c.tensor_cores]
    tc_cases = [(4, False, False, 128, "fp16", c) for c in tc]
    tc_cases += [(4, True, True, 32, "fp16", tc[0]), (4, True, False, 128, "fp16", tc[0]),
                 (8, False, False, 128, "fp16", tc[0]), (8, True, True, 64, "fp16", tc[0]),
                 (4, False, False, 128, "bf16", tc[0]), (4, True, False, 128, "bf16", tc[0])]
    tc_cases = [(*case, 1) for case in tc_cases]
    # Over rows of x (split-K's list): a B column per (row, group), up to 32 columns.
    tc_cases += [(4, False, False, 128, "fp16", c, c.block_m) for c in SPLIT_K_TC.configs if c.tensor_cores]
    tc_cases += [(4, True, True, 32, "fp16", c, 4) for c in SPLIT_K_TC.configs[-1:]]
    rows_tc = [c for c in SPLIT_K_TC.configs if c.tensor_cores][0]
    tc_cases += [(4, False, False, 128, "bf16", rows_tc, 16), (8, True, False, 128, "fp16", rows_tc, 16)]
    for bits, zp, perm, group, xtype, c, rows in tc_cases:
        per_thread = c.block_n * 32 * (32 // bits) // (32 * c.num_warps)
        out.append((f"tc-gemv b{bits} zp={zp} perm={perm} g{group} {xtype} {c.block_n} w{c.num_warps}"
                    + (f" rows {rows}" if rows > 1 else ""),
                    gemv_tc_kernel, {**_QUANT, **_INTS, **_SPLIT, "x_ptr": f"*{xtype}", "s_ptr": f"*{xtype}",
                                     "y_ptr": f"*{xtype}"},
                    dict(BITS=bits, GROUP=group, HAS_ZP=zp, HAS_PERM=perm, BLOCK_M=rows, BLOCK_N=c.block_n,
                         BF16=xtype == "bf16", PARTIAL=True, INTERPRET=False, _weights_per_thread=per_thread),
                    c.num_warps, c.num_stages))
    # The bit-unpacked tiled GEMM (x in the weight's k order): every config with the common
    # weight, each kind of weight with the first config.
    unpacked = [c for c in TILED_TC.configs + SPLIT_K_UNPACKED.configs if c.bit_unpack]
    gemm_cases = [(4, False, 128, "fp16", c) for c in unpacked]
    gemm_cases += [(4, True, 128, "fp16", unpacked[0]), (4, True, 64, "fp16", unpacked[0]), (4, False, 32, "fp16", unpacked[0]),
                   (8, False, 128, "fp16", unpacked[0]), (8, True, 64, "fp16", unpacked[0]),
                   (4, False, 128, "bf16", unpacked[0]), (4, True, 128, "bf16", unpacked[0])]
    for bits, zp, group, xtype, c in gemm_cases:
        per_thread = c.block_n * 32 * (32 // bits) // (32 * c.num_warps)
        out.append((f"tiled-unpacked b{bits} zp={zp} g{group} {xtype} {c.block_m}x{c.block_n} w{c.num_warps} "
                    f"s{c.num_stages}", gemm_tc_kernel,
                    {**_QUANT, **_INTS, **_SPLIT, "xk_ptr": f"*{xtype}", "s_ptr": f"*{xtype}", "y_ptr": f"*{xtype}"},
                    dict(BITS=bits, GROUP=group, HAS_ZP=zp, BF16=xtype == "bf16", BLOCK_M=c.block_m,
                         BLOCK_N=c.block_n, GROUP_M=c.group_m, PARTIAL=True, INTERPRET=False,
                         _weights_per_thread=per_thread),
                    c.num_warps, c.num_stages))
    # Tensor-core paths: fp16 x with fp16 scales dequantizes in fp16 (HALF); bf16 and the
    # fp32 dequantization of fp16 are there too, so a run shows both.
    dots = [("splitk", 4, "*fp16", True, c) for c in SPLIT_K.configs]
    dots += [("tiled", 8, "*bf16", False, c) for c in TILED.configs if not c.dense]  # dense: torch's matmul
    dots += [("splitk", 8, "*bf16", True, SPLIT_K.configs[0]), ("tiled", 4, "*fp16", False, TILED.configs[0]),
             ("tiled", 8, "*fp16", False, TILED.configs[0])]
    dots = [(*d, d[2] == "*fp16") for d in dots]
    dots += [("splitk", 4, "*fp16", True, SPLIT_K.configs[0], False), ("tiled", 4, "*fp16", False, TILED.configs[0], False),
             ("splitk", 8, "*fp16", True, SPLIT_K.configs[0], True),
             ("splitk", 4, "*fp16", True, replace(SPLIT_K.configs[0], whole_block=False), True),
             ("tiled", 4, "*fp16", False, replace(TILED.configs[0], swap_ab=True), True)]
    for path, bits, xtype, partial, c, half in dots:
        dequant = ("fp16 dequant" if half else "fp32 dequant") + (" whole block" if half and c.whole_block else "")
        dequant += " swap-ab" if c.swap_ab else ""
        # Weights a thread dequantizes per iteration (one kernel block of every row of the tile).
        per_thread = c.block_n * 32 * (32 // bits) // (32 * c.num_warps)
        out.append((f"{path} b{bits} {xtype[1:]} {c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages} {dequant}",
                    dot_kernel, {**_QUANT, **_INTS, **_SPLIT, "x_ptr": xtype, "s_ptr": xtype if half else "*bf16",
                                 "y_ptr": xtype},
                    dict(BITS=bits, GROUP=64, RUN=2, HAS_ZP=True, HAS_PERM=False, HALF=half,
                         WHOLE_BLOCK=c.whole_block, SWAP_AB=c.swap_ab, BLOCK_M=c.block_m,
                         BLOCK_N=c.block_n, GROUP_M=c.group_m, PARTIAL=partial, INTERPRET=False,
                         _weights_per_thread=per_thread),
                    c.num_warps, c.num_stages))
    out.append(("dequant", dequant_kernel, {**_INTS, "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*u8",
                                            "out_ptr": "*fp16"},
                dict(BITS=4, GROUP=32, RUN=1, HAS_ZP=True, BLOCK_N=32, INTERPRET=False), 4, 1))
    for offsets in (True, False):
        out.append((f"expand_rows offsets={offsets}", expand_rows_kernel,
                    {**_INTS, "vals_ptr": "*i16", "mask_ptr": "*u8", "offs_ptr": "*i64", "out_ptr": "*i16"},
                    dict(HAS_OFFSETS=offsets, BLOCK_BYTES=128), 4, 1))
    return out


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(json.dumps({"error": "TRITON_INTERPRET is set: interpreted kernels cannot be compiled"}))
        return 2
    for name, kernel, types, constexprs, warps, stages in cases():
        row = {"name": name}
        per_thread = constexprs.pop("_weights_per_thread", 0)
        try:
            c = compile_kernel(kernel, types, constexprs, aligned=_ALIGNED, num_warps=warps, num_stages=stages)
        except (TypeError, ImportError) as e:  # another triton's explicit-target API
            row["api_error"] = f"{type(e).__name__}: {e}"
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:2000]
        else:
            text = sass(c)
            if constexprs.get("PARTIAL"):  # split_sum's ordering: fence, count, then L2 reads
                ptx = c.asm["ptx"]
                row.update(split_fence="fence.acq_rel.gpu" in ptx,
                           split_atomic="atom.global.gpu.acq_rel.add" in ptx,
                           split_reads_l2="ld.global.cg" in ptx)
            ptx = c.asm["ptx"]
            # Packed half arithmetic that flushes subnormals (.ftz) would break the exact
            # decode for tiny scales.
            row.update(half_ops=len(re.findall(r"\b(?:add|sub|mul|fma)[.a-z]*\.b?f16x2\b", ptx)),
                       half_ftz=bool(re.search(r"\b(?:add|sub|mul|fma)[.a-z]*\.ftz[.a-z]*\.b?f16x2\b", ptx)))
            row.update(cubin_bytes=len(c.asm["cubin"]), registers=registers(c),
                       wgmma="wgmma" in c.asm["ptx"], mma_sync="mma.sync" in c.asm["ptx"],
                       ldg128="LDG.E.128" in text, i2f="I2F" in text, local="STL" in text)
            if per_thread:
                body = main_loop(text)
                loop = instruction_count(body)
                row.update(loop_instructions=loop, weights_per_thread=per_thread,
                           instructions_per_weight=round(loop / per_thread, 3),
                           alu_per_weight=round(alu_count(body) / per_thread, 3),
                           loop_shared_stores=len(re.findall(r"\bSTS\b|\bSTS\.", body)),
                           loop_barriers=body.count("BAR.SYNC"))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
