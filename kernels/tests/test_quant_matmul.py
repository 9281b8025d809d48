"""Every matmul path (GEMV, split-K, tiled) against float64, within the bound derived in
reference.py: odd M, K not a multiple of the kernel block (256 columns at 4 bits, 128 at
8) nor of the group, fp16 and bf16, symmetric and asymmetric, per-group, per-channel and
activation-order weights, group sizes the kernels take as they are and ones the repack
has to pad (96, 16, uneven act-order groups)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packing import QuantWeight, random_weight
from reference import assert_matmul_close, same_bits

import ctcodec_kernels as ck
from ctcodec_kernels.matmul import choose_path, split_count, tensor_core_gemv_takes, unpacked_gemm_takes
from ctcodec_kernels.split_sum import COUNTERS, semaphores
from ctcodec_kernels.tuning import SPLIT_K, SPLIT_K_TC, SPLIT_K_UNPACKED, TILED, TILED_TC, Config, tuner_for
from ctcodec_kernels.word_packing import block_columns, k_order_columns

PATH_ROWS = [("gemv", 1), ("splitk", 3), ("splitk", 17), ("tiled", 33)]

# (bits, n, k, group, asym, act_order, x dtype)
CASES = [
    (4, 40, 300, 32, False, False, torch.bfloat16),
    (4, 33, 200, 64, True, False, torch.float16),
    (8, 24, 130, 32, True, True, torch.bfloat16),
    (8, 17, 200, None, False, False, torch.float16),
    (4, 20, 96, 96, True, False, torch.float16),
    (4, 9, 100, 16, False, "uneven", torch.bfloat16),
    (4, 50, 520, 128, False, True, torch.float16),
    (8, 70, 260, 128, True, False, torch.bfloat16),
]


def _x(seed: int, shape, dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def check(qw: QuantWeight, x: torch.Tensor, path: str | None, device: str, config: Config | None = None) -> None:
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    y = ck.quant_matmul(x.to(device), w, path=path, config=config)
    assert y.dtype == x.dtype and tuple(y.shape) == (*x.shape[:-1], qw.n)
    rows = x.reshape(-1, qw.k).shape[0]
    used = path or choose_path(rows)
    # GEMV (on either kind of core) multiplies by the exact (q - zp) and scales partial
    # sums; the other tensor-core paths multiply by the decoded weight, rounded to x's dtype.
    exact = used == "gemv" or (config is not None and config.tensor_cores)
    weight = qw.exact() if exact else qw.decoded(x.dtype)
    assert_matmul_close(y, x, weight)


@pytest.mark.parametrize("path,m", PATH_ROWS)
@pytest.mark.parametrize("bits,n,k,group,asym,act_order,dtype", CASES)
def test_paths(device, path, m, bits, n, k, group, asym, act_order, dtype):
    qw = random_weight(n * k + bits, bits, n, k, group, asym=asym, act_order=act_order)
    check(qw, _x(m + k, (m, k), dtype), path, device)


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([4, 8]), n=st.integers(1, 48), k=st.integers(1, 600),
       group=st.sampled_from([32, 64, 128, 256, 48, None]), asym=st.booleans(),
       act_order=st.sampled_from([False, True, "uneven"]), m=st.sampled_from([1, 2, 5, 16, 19, 32, 37]),
       dtype=st.sampled_from([torch.float16, torch.bfloat16]),
       scale_dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]), seed=st.integers(0, 2**16))
def test_random_shapes(device, bits, n, k, group, asym, act_order, m, dtype, scale_dtype, seed):
    if group is None:
        act_order = False
    qw = random_weight(seed, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=scale_dtype)
    check(qw, _x(seed, (m, k), dtype), None, device)


@pytest.mark.parametrize("config", [
    Config(block_n=4, unroll=8, num_warps=2),  # more blocks per iteration than K has
    Config(block_n=32, unroll=2, num_warps=4),
    Config(block_n=64, unroll=1, num_warps=4),
])
def test_gemv_configs(device, config):
    qw = random_weight(5, 4, 70, 1000, 64, asym=True, act_order=True)
    check(qw, _x(5, (1, 1000), torch.float16), "gemv", device, config)


TC_GEMV = Config(block_n=128, num_warps=4, num_stages=3, tensor_cores=True)


@pytest.mark.parametrize("bits,group,asym,act_order,dtype", [
    (4, 128, False, False, torch.float16), (4, 32, True, False, torch.float16), (4, 64, False, True, torch.float16),
    (4, None, True, False, torch.float16), (4, 512, False, False, torch.float16),
    (8, 32, False, False, torch.float16), (8, 64, True, True, torch.float16), (8, 128, True, False, torch.float16),
    (8, None, False, False, torch.float16),
    (4, 128, False, False, torch.bfloat16), (4, 32, True, True, torch.bfloat16), (4, None, True, False, torch.bfloat16),
])
@pytest.mark.parametrize("n,k", [(70, 1000), (130, 300)])
def test_tensor_core_gemv(device, bits, group, asym, act_order, dtype, n, k):
    # Every group layout the repack gives (32 and 64 columns: a scale column per code pair
    # or two, 128: per half block, per channel and 512: per block or more), zero points
    # (applied in the epilogue), act order, rows past a tile, K split across programs;
    # bf16 x with 4-bit codes.
    qw = random_weight(n + k + bits, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=dtype)
    check(qw, _x(n + k, (1, k), dtype), "gemv", device, TC_GEMV)


@pytest.mark.parametrize("config", [replace(TC_GEMV, block_n=64), replace(TC_GEMV, block_n=256, num_warps=8)])
def test_tensor_core_gemv_configs(device, config):
    qw = random_weight(13, 4, 300, 700, 128, asym=True)
    check(qw, _x(13, (1, 700), torch.float16), "gemv", device, config)


@pytest.mark.parametrize("m,bits,group,asym,act_order,dtype", [
    (2, 4, 128, False, False, torch.float16), (5, 4, 32, True, True, torch.float16),
    (16, 4, 64, True, False, torch.bfloat16), (17, 8, 128, False, True, torch.float16),
    (33, 4, None, True, False, torch.float16), (9, 8, 32, True, False, torch.float16),
])
@pytest.mark.parametrize("block_m", [16, 4])
def test_tensor_core_gemv_over_rows(device, m, bits, group, asym, act_order, dtype, block_m):
    # Several rows of x: a B column per (row, scale group), fewer rows per tile for small
    # groups, row tiles past M, K split.
    qw = random_weight(m + bits, bits, 70, 600, group, asym=asym, act_order=act_order, scale_dtype=dtype)
    check(qw, _x(m, (m, 600), dtype), "splitk", device, replace(TC_GEMV, block_m=block_m))


@pytest.mark.parametrize("block_m", [1, 12])
def test_tensor_core_gemv_rows_per_tile_from_any_config(device, block_m):
    # A config's rows per tile become a power of two of at least 2 when x has rows to spare.
    qw = random_weight(15, 4, 40, 300, 128)
    check(qw, _x(15, (5, 300), torch.float16), "splitk", device, replace(TC_GEMV, block_m=block_m))


@settings(max_examples=20, deadline=None)
@given(bits=st.sampled_from([4, 8]), n=st.integers(1, 48), k=st.integers(1, 600),
       group=st.sampled_from([32, 64, 128, 256, 48, None]), asym=st.booleans(),
       act_order=st.sampled_from([False, True, "uneven"]), m=st.sampled_from([1, 2, 5, 16, 19, 32]),
       bf16=st.booleans(), seed=st.integers(0, 2**16))
def test_tensor_core_gemv_random_shapes(device, bits, n, k, group, asym, act_order, m, bf16, seed):
    dtype = torch.bfloat16 if bf16 and bits == 4 else torch.float16
    if group is None:
        act_order = False
    qw = random_weight(seed, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=dtype)
    check(qw, _x(seed, (m, k), dtype), "gemv" if m == 1 else "splitk", device, TC_GEMV)


@pytest.mark.parametrize("path,config", [("splitk", SPLIT_K.configs[0]), ("gemv", TC_GEMV),
                                         ("splitk", replace(TC_GEMV, block_m=4))])
def test_split_k_sums_in_kernel_and_leaves_counters_zeroed(device, path, config):
    # K split across programs, the last program of each tile adding the partials: the same
    # bits on every call (the sum's order does not depend on which program came last), and
    # every tile's counter back at zero for the next launch.
    qw = random_weight(16, 4, 70, 2000, 128)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    m = 1 if path == "gemv" else 5
    x = _x(16, (m, 2000), torch.float16).to(device)
    tiles = -(-70 // config.block_n) * -(-m // (1 if m == 1 else config.block_m))
    assert split_count(tiles, w.blocks, 4)[0] > 1  # 4: the interpreter's SMs
    first = ck.quant_matmul(x, w, path=path, config=config)
    for _ in range(2):
        assert same_bits(ck.quant_matmul(x, w, path=path, config=config), first)
    assert not semaphores(w.device, 1).any()
    check(qw, x.cpu(), path, device, config)


def test_split_counters_are_one_fixed_buffer():
    # Made once per device and never replaced (a captured CUDA graph keeps its address).
    cpu = torch.device("cpu")
    first = semaphores(cpu)
    assert first.dtype == torch.int32 and first.numel() == COUNTERS and not first.any()
    assert semaphores(cpu, COUNTERS) is first
    with pytest.raises(ValueError, match="counters"):
        semaphores(cpu, COUNTERS + 1)


def test_tensor_core_gemv_refuses_bf16_with_8_bits(device):
    qw = random_weight(14, 8, 16, 256, 128)
    args, kw = qw.prepare_args(device)
    with pytest.raises(ValueError, match="4-bit"):
        ck.quant_matmul(_x(14, (1, 256), torch.bfloat16).to(device), ck.prepare(*args, **kw), path="gemv",
                        config=TC_GEMV)


UNPACKED = Config(block_m=64, block_n=64, num_warps=4, num_stages=3, bit_unpack=True)


@pytest.mark.parametrize("bits,group,asym,act_order,dtype", [
    (4, 128, False, False, torch.float16), (4, 32, True, False, torch.float16), (4, 64, False, True, torch.float16),
    (4, None, True, False, torch.float16), (4, 512, True, False, torch.float16), (4, 96, False, "uneven", torch.float16),
    (8, 32, False, False, torch.float16), (8, 64, True, True, torch.float16), (8, 256, True, False, torch.float16),
    (8, None, False, False, torch.float16),
    (4, 128, False, False, torch.bfloat16), (4, 32, True, True, torch.bfloat16), (4, None, True, False, torch.bfloat16),
])
@pytest.mark.parametrize("m,split", [(40, True), (70, False), (5, True)])
def test_bit_unpacked_gemm(device, bits, group, asym, act_order, dtype, m, split):
    # The tiled path with the weight unpacked in registers (gemm_tc.py): every group layout
    # (scale rows per code pair, per half block, per block or more), zero points added into
    # the words, act order folded into x's k-order permutation, K padding, rows and weight
    # rows past a tile, K split across programs or not.
    qw = random_weight(m + bits + (group or 0), bits, 70, 600, group, asym=asym, act_order=act_order,
                       scale_dtype=dtype)
    check(qw, _x(m, (m, 600), dtype), choose_path(m), device, replace(UNPACKED, block_m=16 if m <= 32 else 64, split=split))


@pytest.mark.parametrize("config", [replace(UNPACKED, block_n=128, num_warps=8), replace(UNPACKED, block_m=128)])
def test_bit_unpacked_gemm_configs(device, config):
    qw = random_weight(17, 4, 150, 520, 128, asym=True, scale_dtype=torch.float16)
    check(qw, _x(17, (130, 520), torch.float16), "tiled", device, config)


@settings(max_examples=15, deadline=None)
@given(bits=st.sampled_from([4, 8]), n=st.integers(1, 80), k=st.integers(1, 600),
       group=st.sampled_from([32, 64, 128, 256, 48, None]), asym=st.booleans(),
       act_order=st.sampled_from([False, True, "uneven"]), m=st.integers(2, 80), bf16=st.booleans(),
       seed=st.integers(0, 2**16))
def test_bit_unpacked_gemm_random_shapes(device, bits, n, k, group, asym, act_order, m, bf16, seed):
    dtype = torch.bfloat16 if bf16 and bits == 4 else torch.float16
    if group is None:
        act_order = False
    qw = random_weight(seed, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=dtype)
    check(qw, _x(seed, (m, k), dtype), choose_path(m), device, replace(UNPACKED, block_m=16 if m <= 32 else 64))


@pytest.mark.parametrize("bits,dtype,scale_dtype", [(8, torch.bfloat16, torch.bfloat16),
                                                    (4, torch.float16, torch.bfloat16),
                                                    (4, torch.bfloat16, torch.float32)])
def test_bit_unpacked_gemm_refuses_what_it_cannot_make_exact(device, bits, dtype, scale_dtype):
    # 8-bit codes do not fit bf16's magic; a scale of another dtype than x would need the
    # product in fp32: the tuner does not offer the kernel there, and a forced call says why.
    qw = random_weight(18, bits, 16, 256, 128, scale_dtype=scale_dtype)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    assert not unpacked_gemm_takes(dtype, w)
    assert tuner_for("tiled", tensor_core_gemv_takes(dtype, bits), unpacked_gemm_takes(dtype, w)) is TILED
    with pytest.raises(ValueError, match="bit-unpacked"):
        ck.quant_matmul(_x(18, (40, 256), dtype).to(device), w, path="tiled", config=UNPACKED)


def test_bit_unpacked_gemm_refuses_tiles_under_16(device):
    qw = random_weight(20, 4, 16, 256, 128, scale_dtype=torch.float16)
    args, kw = qw.prepare_args(device)
    with pytest.raises(ValueError, match="16 x 16"):
        ck.quant_matmul(_x(20, (5, 256), torch.float16).to(device), ck.prepare(*args, **kw), path="splitk",
                        config=replace(UNPACKED, block_m=8))


@pytest.mark.parametrize("k,group,act_order", [(512, 128, False), (300, 64, False), (600, 96, "uneven"),
                                                (520, 128, True)])
def test_x_order_is_made_at_preparation_and_names_every_column_once(device, k, group, act_order):
    # The bit-unpacked GEMM's x permutation, made by prepare (load time, outside any CUDA
    # graph): every column of x once, k (the appended zero column) at each padding position.
    qw = random_weight(21, 4, 8, k, group, act_order=act_order, scale_dtype=torch.float16)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    assert w.x_order is not None and w.x_order.dtype == torch.int32 and w.x_order.numel() == w.k_padded
    order = w.x_order.cpu()
    assert sorted(order[order < k].tolist()) == list(range(k))
    assert int((order == k).sum()) == w.k_padded - k
    bare = replace(w, x_order=None)  # built by hand without it: made on first use, the same
    assert torch.equal(bare.x_order_index().cpu(), order)


def test_k_order_is_a_permutation_of_each_block():
    for bits in (4, 8):
        cols = k_order_columns(bits)
        assert sorted(cols.tolist()) == list(range(block_columns(bits)))


@pytest.mark.parametrize("path,config", [
    ("splitk", Config(block_m=16, block_n=64, num_warps=4, split=False)),  # direct store
    ("splitk", Config(block_m=32, block_n=32, num_warps=4)),
    ("tiled", Config(block_m=64, block_n=32, num_warps=4, split=False)),
    ("tiled", Config(block_m=16, block_n=64, num_warps=4, swap_ab=True)),
    ("tiled", Config(block_m=32, block_n=64, num_warps=4, split=False, swap_ab=True)),
    ("tiled", Config(block_n=0, num_warps=0, dense=True)),
])
def test_dot_configs(device, path, config):
    qw = random_weight(6, 8, 70, 700, 32)
    check(qw, _x(6, (40, 700), torch.bfloat16), path, device, config)


@pytest.mark.parametrize("dtype,act_order", [(torch.bfloat16, False), (torch.float16, True)])
def test_swapped_tiles_split_k(device, dtype, act_order):
    # Few output tiles: K is split and the transposed tiles' fp32 partials are summed.
    config = Config(block_m=16, block_n=64, num_warps=4, swap_ab=True)
    qw = random_weight(12, 4, 70, 1000, 64, asym=True, act_order=act_order, scale_dtype=dtype)
    tiles = -(-8 // config.block_m) * -(-70 // config.block_n)
    assert split_count(tiles, -(-1000 // 256), 4)[0] > 1  # 4: the interpreter's SM count
    check(qw, _x(12, (8, 1000), dtype), "tiled", device, config)


def test_leading_dims_and_empty(device):
    qw = random_weight(7, 4, 12, 64, 32)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    x = _x(7, (2, 3, 64), torch.float16)
    y = ck.quant_matmul(x.to(device), w)
    assert y.shape == (2, 3, 12)
    assert_matmul_close(y, x, qw.decoded(torch.float16))
    row = ck.quant_matmul(x[1, 2].to(device), w)  # 1-D x: one row, the GEMV path
    assert row.shape == (12,)
    assert_matmul_close(row, x[1, 2], qw.exact())
    assert ck.quant_matmul(torch.empty(0, 64, dtype=torch.bfloat16, device=device), w).shape == (0, 12)
    assert ck.quant_matmul(x[:, :, :].transpose(0, 1).to(device), w).shape == (3, 2, 12)  # non-contiguous


def test_one_shot_call(device):
    qw = random_weight(8, 8, 10, 96, 32, asym=True, act_order=True)
    args, kw = qw.prepare_args(device)
    x = _x(8, (4, 96), torch.bfloat16)
    assert_matmul_close(ck.dequant_matmul(x.to(device), *args, **kw), x, qw.decoded(torch.bfloat16))


def test_tiled_tuner_offers_the_bit_unpacked_gemm_after_the_tiled_kernel(device):
    qw = random_weight(19, 4, 16, 256, 128, scale_dtype=torch.float16)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    assert unpacked_gemm_takes(torch.float16, w)
    tuner = tuner_for("tiled", True, True)
    assert tuner is TILED_TC and tuner.configs[0] == TILED.configs[0]  # untuned: the tiled kernel
    assert any(c.bit_unpack for c in tuner.configs)
    rows = tuner_for("splitk", True, True)
    assert rows is SPLIT_K_UNPACKED and rows.configs[0] == SPLIT_K.configs[0]
    assert any(c.bit_unpack for c in rows.configs) and any(c.tensor_cores for c in rows.configs)
    assert tuner_for("splitk", True, False) is SPLIT_K_TC  # scales of another dtype than x


def test_path_choice_and_splits():
    assert [choose_path(m) for m in (1, 2, 32, 33, 4096)] == ["gemv", "splitk", "splitk", "tiled", "tiled"]
    assert split_count(tiles=200, blocks=64, sms=132) == (1, 64)
    for tiles, blocks in [(1, 1), (1, 7), (3, 100), (64, 16), (131, 1000)]:
        splits, per = split_count(tiles, blocks, 132)
        assert splits * per >= blocks and (splits - 1) * per < blocks  # covers K, no empty split
        assert 1 <= splits <= blocks


def test_bad_calls(device):
    qw = random_weight(9, 4, 8, 64, 32)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        ck.quant_matmul(torch.zeros(1, 64, device=device), w)
    with pytest.raises(ValueError, match="columns"):
        ck.quant_matmul(torch.zeros(1, 65, dtype=torch.float16, device=device), w)
    with pytest.raises(ValueError, match="one row"):
        ck.quant_matmul(torch.zeros(3, 64, dtype=torch.float16, device=device), w, path="gemv")
    with pytest.raises(ValueError, match="unknown path"):
        ck.quant_matmul(torch.zeros(3, 64, dtype=torch.float16, device=device), w, path="fast")


SWAPPED = Config(block_m=32, block_n=64, num_warps=4, swap_ab=True)


@pytest.mark.parametrize("path,config", [("splitk", None), ("tiled", None), ("tiled", SWAPPED),
                                         ("tiled", Config(block_n=0, num_warps=0, dense=True)),
                                         ("tiled", replace(UNPACKED, block_m=16))])
@pytest.mark.parametrize("bits,group,asym,act_order,scale_range", [
    (4, 32, False, False, (0.01, 0.2)),
    (4, 64, True, True, (0.01, 0.2)),
    (8, None, True, False, (0.01, 0.2)),
    (8, 96, False, "uneven", (1e-7, 4e-5)),  # fp16 subnormal scales and products
    (4, 128, True, False, (100.0, 4000.0)),  # products near fp16 largest finite values (15 * 4000)
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_core_paths_multiply_by_the_decoded_weight_bit_for_bit(device, path, config, bits, group, asym,
                                                                      act_order, scale_range, dtype):
    # x = the identity: each output is one product w * 1, so y is the weight a path
    # multiplied by. It must be ctcodec's decode exactly, whether dequantized in fp16
    # (fp16 x and scales) or in fp32 and rounded.
    n, k = 24, 300
    qw = random_weight(bits * 100 + n, bits, n, k, group, asym=asym, act_order=act_order, scale_dtype=dtype,
                       scale_range=scale_range)
    args, kw = qw.prepare_args(device)
    w = ck.prepare(*args, **kw)
    if config is not None and config.bit_unpack and not unpacked_gemm_takes(dtype, w):
        pytest.skip("8-bit codes with bf16 x: not taken by the bit-unpacked GEMM (see the refusal test)")
    y = ck.quant_matmul(torch.eye(k, dtype=dtype, device=device), w, path=path, config=config)
    assert same_bits(y.t().contiguous(), qw.decoded(dtype))
