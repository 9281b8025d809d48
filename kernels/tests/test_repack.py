"""The load-time repack: packing helpers against compressed-tensors' own packer, the
column plan (which inputs the kernels can take as they are), and clear errors for
tensors that do not describe a pack-quantized weight."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packing import random_weight

import ctcodec_kernels as ck
from ctcodec_kernels.word_packing import block_columns, pack_blocks, pack_rows, unpack_rows
from ctcodec_kernels.repack import CHANNEL_GROUP


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([4, 8]), rows=st.integers(1, 5), cols=st.integers(1, 70), seed=st.integers(0, 999))
def test_pack_unpack_round_trip(bits, rows, cols, seed):
    codes = torch.randint(0, 2**bits, (rows, cols), generator=torch.Generator().manual_seed(seed))
    packed = pack_rows(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (rows, -(-cols * bits // 32))
    assert torch.equal(unpack_rows(packed, bits, cols).long(), codes)
    # Code k of a row: word k*b//32, bits (k*b) % 32, least significant first.
    k = cols - 1
    word = int(packed[0, k * bits // 32]) & 0xFFFFFFFF
    assert (word >> (k * bits % 32)) & (2**bits - 1) == int(codes[0, k])


def test_pack_rows_matches_compressed_tensors():
    ct = pytest.importorskip("compressed_tensors.compressors.quantized_compressors.pack_quantized")
    codes = torch.randint(-8, 8, (3, 40), generator=torch.Generator().manual_seed(1), dtype=torch.int8)
    assert torch.equal(pack_rows((codes + 8).long(), 4), ct.pack_to_int32(codes, 4))


def test_block_layout():
    bits = 4
    kb = block_columns(bits)
    codes = torch.randint(0, 16, (2, 2 * kb), generator=torch.Generator().manual_seed(2))
    words = pack_blocks(codes, bits)
    assert words.shape == (2, 64)
    # Word j of block b holds columns b*256 + i*32 + j, code i at bits 4i.
    for blk, j, i in [(0, 0, 0), (1, 31, 7), (1, 5, 3)]:
        got = (int(words[1, blk * 32 + j]) & 0xFFFFFFFF) >> (4 * i) & 15
        assert got == int(codes[1, blk * kb + i * 32 + j])


def test_column_plans():
    def prep(qw):
        args, kw = qw.prepare_args()
        return ck.prepare(*args, **kw)

    plain = prep(random_weight(0, 4, 8, 300, 64))
    assert (plain.group, plain.perm, plain.k_padded, plain.scales.shape) == (64, None, 512, (8, 8))
    channel = prep(random_weight(0, 8, 8, 300, None))
    assert (channel.group, channel.perm, channel.scales.shape) == (CHANNEL_GROUP, None, (1, 8))
    assert "n=8, k=300, num_bits=8" in repr(channel)
    act = prep(random_weight(0, 4, 8, 300, 128, act_order=True))
    assert act.group == 128 and act.perm is not None and sorted(act.perm[:300].tolist()) == list(range(300))
    # 96 neither divides a block (256) nor is a multiple of one: 32-column pieces, each
    # with its group's scale; its groups are whole pieces, so the columns stay in place.
    odd = prep(random_weight(0, 4, 8, 300, 96))
    assert odd.group == 32 and odd.perm is None and odd.scales.shape == (16, 8)
    # 48-column groups are padded to 64 each: columns move, x is read through perm.
    padded = prep(random_weight(0, 4, 8, 300, 48))
    assert padded.group == 32 and int((padded.perm >= 0).sum()) == 300 and padded.k_padded == 512
    uneven = prep(random_weight(0, 4, 8, 300, 32, act_order="uneven"))
    assert uneven.group == 32 and sorted(uneven.perm[uneven.perm >= 0].tolist()) == list(range(300))


def test_bad_inputs():
    qw = random_weight(0, 4, 8, 64, 32, asym=True, act_order=True)
    args, kw = qw.prepare_args()
    packed, scale, bits, group, n, k = args
    with pytest.raises(ValueError, match="num_bits=3"):
        ck.prepare(packed, scale, 3, group, n, k)
    with pytest.raises(ValueError, match="weight_packed must be int32"):
        ck.prepare(packed[:, :-1], scale, bits, group, n, k)
    with pytest.raises(ValueError, match="weight_packed must be int32"):
        ck.prepare(packed.float(), scale, bits, group, n, k)
    with pytest.raises(ValueError, match="scale columns"):
        ck.prepare(packed, scale, bits, 16, n, k)
    with pytest.raises(ValueError, match="one scale column"):
        ck.prepare(packed, scale, bits, None, n, k)
    with pytest.raises(ValueError, match="weight_zero_point"):
        ck.prepare(packed, scale, bits, group, n, k, weight_zero_point=kw["weight_zero_point"][:, :1])
    with pytest.raises(ValueError, match="outside"):
        ck.prepare(packed, scale, bits, group, n, k, weight_g_idx=kw["weight_g_idx"] + 1)
    with pytest.raises(ValueError, match="weight_g_idx must be"):
        ck.prepare(packed, scale, bits, group, n, k, weight_g_idx=kw["weight_g_idx"][:-1])
    with pytest.raises(ValueError, match="weight_scale must be"):
        ck.prepare(packed, scale.int(), bits, group, n, k)
