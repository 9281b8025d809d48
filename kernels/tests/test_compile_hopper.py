"""Every kernel, in every config the tuner can pick, compiles for a Hopper GPU (sm_90)
through Triton's whole pipeline down to ptxas (from the triton wheel), on any machine:
nothing runs. This catches what the CPU interpreter lets through (globals that are not
constexpr, ops the real lowering rejects) and checks what the paths were built for:
16-byte loads of packed words, no int->float conversion per code, Hopper's wgmma for
the tiled GEMM, no spills to local memory. It runs in a subprocess because kernels
imported under TRITON_INTERPRET cannot be compiled."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hopper import compiled_rows  # noqa: E402


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict]:
    return compiled_rows(HERE / "hopper.py")


def test_every_kernel_compiles(compiled):
    failed = {name: row["error"] for name, row in compiled.items() if "error" in row}
    assert not failed, failed
    assert all(row["cubin_bytes"] > 0 and not row["local"] for row in compiled.values())


def test_what_each_path_was_built_for(compiled):
    for name, row in compiled.items():
        if name.startswith("gemv"):
            assert row["ldg128"], name
            # The main loop's cost per weight (symmetric 4-bit: 4.2-5.3 instructions with
            # triton 3.x); a layout conversion or a constant re-made per code adds one or more.
            if "b4 zp=False" in name:
                assert 0 < row["instructions_per_weight"] <= 5.5, row
            assert not row["i2f"] or "zp=True" in name, name  # codes become floats by bit tricks
        elif name.startswith("tc-gemv"):
            assert row["wgmma"], name
        elif name.startswith("tiled"):  # the tiled kernel and the bit-unpacked one
            assert row["wgmma"], name
        elif name.startswith("splitk"):
            assert row["mma_sync"] or row["wgmma"], name


def test_fp16_dequantization_costs_fewer_instructions(compiled):
    # The same tensor-core kernel and config, dequantizing in fp16 (packed HADD2/HMUL2)
    # against fp32 then a conversion: fewer instructions per weight in the main loop.
    # One dot per block (split-K's configs) costs fewer again than a dot per code position.
    # Margins: ptxas moves these loops by a few percent with changes outside them (the
    # in-kernel split sum took the per-slice fp16 loop from 6.47 to 7.04, fp32 from 7.05 to
    # 7.31), so the per-slice pair only has to be cheaper by 2%.
    for cheaper, dearer, margin in [("fp16 dequant", "fp32 dequant", 0.98),
                                    ("fp16 dequant whole block", "fp16 dequant", 0.95)]:
        pairs = [(row, compiled[name[:-len(cheaper)] + dearer]) for name, row in compiled.items()
                 if name.endswith(cheaper) and name[:-len(cheaper)] + dearer in compiled]
        assert pairs, cheaper
        for low, high in pairs:
            assert low["instructions_per_weight"] < margin * high["instructions_per_weight"], (low, high)


def test_tensor_core_gemv_costs_fewer_instructions(compiled):
    # Pairs of codes unpacked into fp16 registers and multiplied on tensor cores, against
    # the CUDA-core GEMV's exact fp32 scheme (at least an AND, an FMA and a product per
    # weight): symmetric 4-bit, every config of each, the best of each compared.
    tc = [row["instructions_per_weight"] for name, row in compiled.items()
          if name.startswith("tc-gemv b4 zp=False perm=False g128 fp16") and "rows" not in name]
    cuda_cores = [row["instructions_per_weight"] for name, row in compiled.items()
                  if name.startswith("gemv b4 zp=False perm=False")]
    assert tc and cuda_cores
    assert max(tc) <= 3.5, tc
    assert min(tc) < 0.7 * min(cuda_cores), (tc, cuda_cores)
    # Zero points and act order cost more, but still less than the CUDA-core GEMV's 6.1.
    zp = [row["instructions_per_weight"] for name, row in compiled.items()
          if name.startswith("tc-gemv b4 zp=True") and "rows" not in name]
    assert zp and max(zp) < 4.5, zp
    # bf16 x (4-bit): a shift per code pair (bf16 has no room for the code at bit 4).
    bf16 = [row["instructions_per_weight"] for name, row in compiled.items() if name.startswith("tc-gemv b4 zp=False")
            and " bf16 " in name and "rows" not in name]
    assert bf16 and max(bf16) < 0.75 * min(cuda_cores), (bf16, cuda_cores)


def test_tensor_core_gemv_over_rows_costs_no_more_than_split_k(compiled):
    # Up to 16 rows of x (one B column per row and group), symmetric 4-bit group 128:
    # cheaper per weight than split-K's cheapest fp16 config (zero points, group 64; its
    # symmetric loop differs by the zero load only, outside the per-weight work).
    rows = [row["instructions_per_weight"] for name, row in compiled.items()
            if name.startswith("tc-gemv b4 zp=False") and "rows" in name]
    split_k = [row["instructions_per_weight"] for name, row in compiled.items()
               if name.startswith("splitk b4 fp16") and "fp16 dequant" in name]
    assert rows and split_k
    assert min(rows) < min(split_k), (rows, split_k)


def test_split_kernels_order_their_partials_before_the_count(compiled):
    # split_sum.store_tile on the GPU: every thread fences its partial's stores at GPU scope,
    # one thread counts with an acquire-release atomic, and the last program reads the
    # partials from L2 (.cg), not from a stale L1 line. The interpreter cannot check this.
    split = {name: row for name, row in compiled.items() if "split_fence" in row}
    assert len(split) >= 10, sorted(split)
    for name, row in split.items():
        assert row["split_fence"] and row["split_atomic"] and row["split_reads_l2"], (name, row)


def test_bit_unpacked_gemm_keeps_the_weight_in_registers(compiled):
    # gemm_tc.py: the weight is unpacked and scaled in registers and is wgmma's A operand
    # there, so its main loop stores nothing to shared memory (x arrives by async copies)
    # and meets at few barriers, where the tiled kernel stores the dequantized weight
    # (72 stores, 33 barriers per iteration for 4-bit fp16). Per weight, like for like
    # (4-bit, zero points, group 64, fp16): fewer instructions than the tiled kernel's.
    unpacked = {name: row for name, row in compiled.items() if name.startswith("tiled-unpacked")}
    assert len(unpacked) >= 8, sorted(unpacked)
    for name, row in unpacked.items():
        assert row["wgmma"] and row["loop_shared_stores"] == 0 and row["loop_barriers"] <= 4, (name, row)
    symmetric = [row["instructions_per_weight"] for name, row in unpacked.items() if "b4 zp=False g128 fp16" in name]
    assert symmetric and max(symmetric) <= 4.2, symmetric
    like = unpacked["tiled-unpacked b4 zp=True g64 fp16 64x64 w4 s3"]["instructions_per_weight"]
    tiled = compiled["tiled b4 fp16 64x128 w4 s3 fp16 dequant"]["instructions_per_weight"]
    assert like < 0.9 * tiled, (like, tiled)
    # Split-K's rows in 16-row tiles: the unpacking does not grow with the rows, so fewer
    # instructions per weight than the tensor-core GEMV's 16-row tiles (a B column per row
    # and group) and split-K's decoded weight.
    rows = unpacked["tiled-unpacked b4 zp=False g128 fp16 16x64 w4 s4"]["instructions_per_weight"]
    gemv_rows = compiled["tc-gemv b4 zp=False perm=False g128 fp16 128 w4 rows 16"]["instructions_per_weight"]
    split_k = min(row["instructions_per_weight"] for name, row in compiled.items() if name.startswith("splitk b4 fp16"))
    assert rows < 0.95 * min(gemv_rows, split_k), (rows, gemv_rows, split_k)


def test_packed_half_arithmetic_keeps_subnormals(compiled):
    # The fp16/bf16 unpacking and scaling (tensor-core GEMV, bit-unpacked GEMM, fp16
    # dequantization) is exact only if subnormal scales and products survive: no .ftz.
    half = {name: row for name, row in compiled.items() if row.get("half_ops")}
    assert any(name.startswith("tiled-unpacked") for name in half) and any(n.startswith("tc-gemv") for n in half)
    assert not [name for name, row in half.items() if row["half_ftz"]]
