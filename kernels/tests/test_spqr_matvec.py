"""SpQR: the repack and dequantize_spqr against ctcodec's decode (bit for bit), spqr_matvec
against float64 within a derived bound and bit for bit on integer data, malformed
inputs, and (in a subprocess) every kernel and config compiled for sm_90.

Error bound of spqr_matvec (fp32 accumulation). The kernel computes, in f32,
    y = Σ_runs s·(Σ_j q_j·x_j − z·Σ_j x_j) + Σ_outliers delta·x,
with s and z equal to the decoder's f32 values bit for bit, q_j·x_j exact (q < 2**8 times
an fp16/bf16 x, scaled by a power of two), and delta = fl32(value − w_dense). The exact
value of that expression differs from Σ_j w_j·x_j (w: the decoder's f32 weight,
outliers replaced) by the decoder's own roundings of w = fl(s·fl(q − z)) (<= 2u|w|,
u = 2**-24) and delta's rounding (<= u|delta|). Evaluating it in f32 adds at most one
relative error u per operation along the longest chain of sums (a run, the run sums
along K, the final sums: far fewer than K + 64) to terms bounded by
|s|·(|q| + |z|)·|x| and |delta·x|. So, with
    size = Σ_j |x_j|·(|s_j|·(|q_j| + |z_j|) + |w_j|) + Σ_outliers |delta·x|,
|y_f32 − y_exact| <= 2·(K + 64)·u·size, and the one rounding to x's dtype adds
u_out·|y_exact| (2**-11 fp16, 2**-8 bf16) plus half of fp16's smallest subnormal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's ctcodec_kernels (also when run as a script)
sys.path.append(str(HERE.parents[1] / "tests"))  # the repository's SpQR helpers (spqr_files)

import ctcodec  # noqa: E402
import ctcodec_kernels as ck  # noqa: E402
from ctcodec.spqr_format import SpqrParams, pack  # noqa: E402
from ctcodec_kernels import spqr as S  # noqa: E402
from ctcodec_kernels.spqr import SpqrConfig  # noqa: E402
from reference import same_bits  # noqa: E402
from spqr_files import random_output, write_folder  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
_TORCH_DTYPE = {"I64": torch.int64, "I32": torch.int32, "F16": torch.float16}


def stored(params: SpqrParams, out: dict, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The stored tensors of one module (names without prefix), from ctcodec's packer."""
    tensors = {}
    for name, dt, shape, raw in pack(params, "layer", **out):
        t = torch.frombuffer(bytearray(raw.tobytes()), dtype=_TORCH_DTYPE[dt]).reshape(shape)
        tensors[name.rsplit(".", 1)[1]] = t.to(device)
    return tensors


def parts_f32(params: SpqrParams, out: dict):
    """(w, s, q, z, delta) as f32 numpy [m, n] in INPUT column order: the decoder's weight
    (outliers replaced), the per-weight s, q, z, and delta at outlier positions (else 0)."""
    q = out["codes"].astype(np.float32)
    m, n = q.shape
    so = out["second_order"].astype(np.float32)
    tile, group = np.arange(m) // params.beta1, np.arange(n) // params.beta2
    s = (so[tile, :, 0] * (out["scale_codes"].astype(np.float32) - so[tile, :, 1]))[:, group]
    z = (so[tile, :, 2] * (out["zero_codes"].astype(np.float32) - so[tile, :, 3]))[:, group]
    dense = s * (q - z)
    w = dense.copy()
    r, c = out["outlier_rows"], out["outlier_cols"]
    w[r, c] = out["outlier_values"].astype(np.float32)
    delta = np.zeros_like(w)
    delta[r, c] = w[r, c] - dense[r, c]
    perm = out["perm"]

    def unperm(a):
        b = np.empty_like(a)
        b[:, perm] = a
        return b

    return tuple(unperm(a) for a in (w, s, q, z, delta))


def assert_close(y: torch.Tensor, x: torch.Tensor, params: SpqrParams, out: dict) -> None:
    """y (spqr_matvec, x's dtype) against float64 within the bound in the module docstring."""
    w, s, q, z, delta = (torch.from_numpy(a).double() for a in parts_f32(params, out))
    k = x.shape[-1]
    xd = x.detach().cpu().double().reshape(-1, k)
    exact = xd @ w.T
    size = xd.abs() @ (s.abs() * (q.abs() + z.abs()) + w.abs() + delta.abs()).T
    tol = UNIT_ROUNDOFF[x.dtype] * exact.abs() + 2 * (k + 64) * 2.0**-24 * size + 2.0**-25
    got = y.detach().cpu().double().reshape(exact.shape)
    err = (got - exact).abs()
    worst = int(torch.argmax(err - tol))
    assert bool((err <= tol).all()), (
        f"max excess at {divmod(worst, exact.shape[1])}: got {got.flatten()[worst].item()}, "
        f"exact {exact.flatten()[worst].item()}, tolerance {tol.flatten()[worst].item()}")


# (bits, beta1, beta2, qs, qz, dtype, layout, m, n): b in {2, 3, 4} with 16 x 16, both
# outlier layouts, an odd one (beta2 = 8, m not a multiple of beta1, n not of beta2), and
# wider statistics (qs + qz > 8: int16 stat codes) with groups spanning units (5 bits,
# beta2 = 48 padded to 64).
CASES = [
    (3, 16, 16, 3, 3, "bfloat16", "csr", 48, 256),
    (3, 16, 16, 3, 3, "float16", "ptcsr", 40, 200),
    (2, 16, 16, 3, 3, "bfloat16", "ptcsr", 33, 130),
    (4, 16, 16, 2, 4, "float32", "csr", 20, 96),
    (3, 7, 8, 3, 3, "bfloat16", "ptcsr", 13, 45),
    (5, 4, 48, 8, 8, "float16", "csr", 9, 70),
]


def _case(i: int, outlier_share: float = 0.05):
    bits, beta1, beta2, qs, qz, dtype, layout, m, n = CASES[i]
    params = SpqrParams(bits, beta1, beta2, qs, qz, dtype, layout)
    return params, random_output(params, m, n, seed=100 + i, outlier_share=outlier_share)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_dequantize_matches_ctcodec(tmp_path, device, i):
    params, out = _case(i)
    folder = write_folder(tmp_path, params, {"layer.proj": out})
    want = dict(ctcodec.decompress_file(folder))["layer.proj.weight"]
    named = {f"model.layers.0.proj.{k}": v for k, v in stored(params, out, device).items()}  # prefixes are dropped
    w = ck.prepare_spqr(named, params)
    got = ck.dequantize_spqr(w, DTYPES[params.dtype])
    assert same_bits(got, want)
    f32 = ck.dequantize_spqr(w, torch.float32)  # every dtype is one rounding of the same f32 weight
    for dtype in (torch.float16, torch.bfloat16):
        assert same_bits(ck.dequantize_spqr(w, dtype), f32.to(dtype))


@pytest.mark.parametrize("i,rows,dtype", [
    (0, 1, torch.float16), (0, 3, torch.bfloat16), (0, 16, torch.float16),
    (4, 1, torch.bfloat16), (4, 3, torch.float16), (4, 16, torch.bfloat16),
    (2, 1, torch.float16), (3, 5, torch.bfloat16), (5, 1, torch.float16),
])
def test_matvec_within_bound(device, i, rows, dtype):
    params, out = _case(i)
    w = ck.prepare_spqr(stored(params, out, device), params)
    x = torch.randn(rows, w.n, generator=torch.Generator().manual_seed(rows + i)).to(dtype)
    y = ck.spqr_matvec(x.to(device), w)
    assert y.dtype == dtype and tuple(y.shape) == (rows, w.m)
    assert_close(y, x, params, out)


@pytest.mark.parametrize("config", [
    SpqrConfig(32, 32, 2, outlier_chunk=4),  # rows over two second-order tiles; masked units; outliers in steps
    SpqrConfig(4, 16, 1, outlier_chunk=64),
])
def test_matvec_configs(device, config):
    params, out = _case(1, outlier_share=0.1)
    w = ck.prepare_spqr(stored(params, out, device), params)
    x = torch.randn(2, w.n, generator=torch.Generator().manual_seed(9)).to(torch.float16)
    assert_close(ck.spqr_matvec(x.to(device), w, config=config), x, params, out)


TENSOR_CORES = SpqrConfig(16, 16, 1, outlier_chunk=8, tensor_cores=True)  # small: several programs here


def _tensor_core_weight(params: SpqrParams, out: dict, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weight the tensor-core path multiplies by, float64, and where outliers are):
    the decoder's dense f32 weight rounded to x's dtype, plus delta = fl32(value - dense)
    at outlier positions (added in f32 after the dots)."""
    _, s, q, z, delta = parts_f32(params, out)
    dense = torch.from_numpy(s * (q - z))  # f32, as the decoder rounds it
    return dense.to(dtype).double() + torch.from_numpy(delta).double(), torch.from_numpy(delta != 0)


@pytest.mark.parametrize("i,rows,dtype", [
    (0, 2, torch.float16), (0, 16, torch.bfloat16), (1, 5, torch.float16), (2, 16, torch.float16),
    (4, 3, torch.bfloat16), (5, 9, torch.float16),
])
def test_tensor_core_path_within_bound(device, i, rows, dtype):
    # Products of x and a 16-bit weight are exact in f32; the f32 sums in any order are
    # within 2 (K + 64) u of sum |x w|, and one rounding to x's dtype follows.
    params, out = _case(i)
    w = ck.prepare_spqr(stored(params, out, device), params)
    x = torch.randn(rows, w.n, generator=torch.Generator().manual_seed(rows + 7 * i)).to(dtype)
    y = ck.spqr_matvec(x.to(device), w, config=TENSOR_CORES)
    assert y.dtype == dtype and tuple(y.shape) == (rows, w.m)
    weight, _ = _tensor_core_weight(params, out, dtype)
    xd = x.double()
    exact = xd @ weight.T
    tol = UNIT_ROUNDOFF[dtype] * exact.abs() + 2 * (w.n + 64) * 2.0**-24 * (xd.abs() @ weight.abs().T) + 2.0**-25
    err = (y.cpu().double() - exact).abs()
    assert bool((err <= tol).all()), float((err - tol).max())


@pytest.mark.parametrize("i", [0, 2, 4, 5])
def test_tensor_core_path_multiplies_by_the_decoded_weight(device, i):
    # x = 16 unit rows: each output is one product w * 1, the decoded weight rounded to
    # x's dtype, bit for bit (outlier positions carry their f32 correction on top).
    params, out = _case(i)
    w = ck.prepare_spqr(stored(params, out, device), params)
    dtype = torch.float16 if i % 2 else torch.bfloat16
    cols = torch.arange(16) * (w.n // 16)
    x = torch.zeros(16, w.n, dtype=dtype)
    x[torch.arange(16), cols] = 1
    y = ck.spqr_matvec(x.to(device), w, config=TENSOR_CORES).cpu()
    _, s, q, z, _ = parts_f32(params, out)
    decoded = torch.from_numpy(s * (q - z)).to(dtype)[:, cols].t()
    _, outliers = _tensor_core_weight(params, out, dtype)
    plain = ~outliers[:, cols].t()
    assert bool(plain.any())
    assert same_bits(y[plain].contiguous(), decoded[plain].contiguous())


def test_tensor_core_configs_are_checked():
    with pytest.raises(ValueError, match="tensor-core"):
        S.check_config(SpqrConfig(8, 16, 1, tensor_cores=True))


def _integer_output(params: SpqrParams, m: int, n: int, seed: int) -> dict:
    """Quantizer output where every product and sum of the decode and the matvec is a
    small integer (exact in f32): integer second order, codes, outlier values."""
    rng = np.random.default_rng(seed)
    groups, tiles = -(-n // params.beta2), -(-m // params.beta1)
    so = np.stack([rng.integers(1, 3, (tiles, groups)), rng.integers(0, 4, (tiles, groups)),
                   rng.integers(1, 3, (tiles, groups)), rng.integers(0, 4, (tiles, groups))], -1)
    rows, cols = np.nonzero(rng.random((m, n)) < 0.05)
    return {
        "codes": rng.integers(0, 1 << params.bits, (m, n), dtype=np.uint8),
        "scale_codes": rng.integers(0, 1 << params.qq_scale_bits, (m, groups), dtype=np.uint8),
        "zero_codes": rng.integers(0, 1 << params.qq_zero_bits, (m, groups), dtype=np.uint8),
        "second_order": so.astype(np.float16),
        "perm": rng.permutation(n).astype(np.int32),
        "outlier_rows": rows.astype(np.int32),
        "outlier_cols": cols.astype(np.int32),
        "outlier_values": rng.integers(-20, 21, len(rows)).astype(np.float16),
    }


@pytest.mark.parametrize("bits,layout,dtype", [(3, "csr", torch.float16), (4, "ptcsr", torch.bfloat16)])
def test_integer_data_is_exact(device, bits, layout, dtype):
    # Every partial sum is an integer below 2**24, so f32 accumulation in any order is
    # exact and the output is the exact value rounded once: bit for bit.
    params = SpqrParams(bits, 16, 16, 3, 3, "float32", layout)
    out = _integer_output(params, 37, 300, seed=bits)
    w = ck.prepare_spqr(stored(params, out, device), params)
    x = torch.randint(-2, 3, (3, 300), generator=torch.Generator().manual_seed(bits)).to(dtype)
    want = x.double() @ torch.from_numpy(parts_f32(params, out)[0]).double().T
    assert bool((want.abs() < 2**24).all()) and bool((want == want.round()).all())
    assert same_bits(ck.spqr_matvec(x.to(device), w), want.to(dtype))
    assert same_bits(ck.spqr_matvec(x[1].to(device), w), want[1].to(dtype))  # 1-D x: one row


def test_leading_dims_and_empty(device):
    params, out = _case(3)
    w = ck.prepare_spqr(stored(params, out, device), params)
    x = torch.randn(2, 3, w.n, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    y = ck.spqr_matvec(x.to(device), w)
    assert y.shape == (2, 3, w.m)
    assert_close(y, x, params, out)
    assert ck.spqr_matvec(torch.empty(0, w.n, dtype=torch.float16, device=device), w).shape == (0, w.m)
    x17 = torch.randn(17, w.n, generator=torch.Generator().manual_seed(17)).to(torch.float16)
    assert_close(ck.spqr_matvec(x17.to(device), w), x17, params, out)  # 16 rows, then 1


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("a kernel was launched")


def test_malformed_input_raises_before_launch(device, monkeypatch):
    params, out = _case(0)
    t = stored(params, out, device)
    w = ck.prepare_spqr(t, params)
    monkeypatch.setattr(S, "gather_x_kernel", _NoLaunch())
    monkeypatch.setattr(S, "spqr_matvec_kernel", _NoLaunch())
    monkeypatch.setattr(S, "spqr_dequant_kernel", _NoLaunch())
    x = torch.zeros(1, w.n, dtype=torch.float16, device=device)
    bad_prepared = [
        dataclasses.replace(w, codes=w.codes[:, :, :-16]),
        dataclasses.replace(w, stats=w.stats.to(torch.int32)),
        dataclasses.replace(w, second_order=w.second_order[:1]),
        dataclasses.replace(w, o_offsets=w.o_offsets[:-1]),
        dataclasses.replace(w, o_delta=w.o_delta.half()),
        dataclasses.replace(w, kperm=w.kperm.t()),  # not contiguous
        dataclasses.replace(w, nu=w.nu + 1),
    ]
    for bad in bad_prepared:
        with pytest.raises(ValueError, match="SpQR weight: prepared"):
            ck.spqr_matvec(x, bad)
        with pytest.raises(ValueError, match="SpQR weight: prepared"):
            ck.dequantize_spqr(bad)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        ck.spqr_matvec(x.float(), w)
    with pytest.raises(ValueError, match="columns"):
        ck.spqr_matvec(torch.zeros(1, w.n + 1, dtype=torch.float16, device=device), w)
    with pytest.raises(ValueError, match="block_m"):
        ck.spqr_matvec(x, w, config=SpqrConfig(3, 16, 1))
    with pytest.raises(ValueError, match="PreparedSpqr"):
        ck.spqr_matvec(x, t)
    with pytest.raises(ValueError, match="dtype"):
        ck.dequantize_spqr(w, torch.int8)


def test_malformed_tensors_raise(device):
    params, out = _case(0)
    ptcsr = SpqrParams(**{**params.__dict__, "outlier_layout": "ptcsr"})
    good, good_pt = stored(params, out, device), stored(ptcsr, out, device)

    def broken(base, **changes):
        t = dict(base)
        for k, v in changes.items():
            if v is None:
                t.pop(k)
            else:
                t[k] = v
        return t

    perm = good["weight_perm"].clone()
    perm[1] = perm[0]
    offsets = good["weight_outlier_row_offsets"].clone()
    offsets[-1] += 1
    col_vals = good["weight_outlier_col_vals"].clone()
    col_vals[0] = (col_vals[0] & ~0xFFFF) | 300  # column past n = 256
    so = good["weight_second_order"].clone()
    so[0, 0, 0] = float("inf")
    cases = [
        (broken(good, weight_perm=perm), "permutation"),
        (broken(good, weight_outlier_row_offsets=offsets), "offsets"),
        (broken(good, weight_outlier_col_vals=col_vals), "past the 256 columns"),
        (broken(good, weight_second_order=so), "not finite"),
        (broken(good, weight_codes=good["weight_codes"][:, :-1]), "weight_codes"),
        (broken(good, weight_stats=good["weight_stats"].to(torch.int64)), "weight_stats"),
        (broken(good, weight_shape=None), "missing weight_shape"),
        (broken(good, weight_outlier_tile_offsets=good_pt["weight_outlier_tile_offsets"]), "exactly one"),
        (broken(good, weight_outlier_row_offsets=None, weight_outlier_col_vals=None), "exactly one"),
        (broken(good_pt, weight_outlier_tile_offsets=good_pt["weight_outlier_tile_offsets"] * 0), "offsets"),
    ]
    for tensors, match in cases:
        with pytest.raises(ValueError, match=match):
            ck.prepare_spqr(tensors, params)
    with pytest.raises(ValueError, match="bits"):
        ck.prepare_spqr(good, {**params.config(), "bits": 9})
    with pytest.raises(ValueError, match="beta2"):
        ck.prepare_spqr(good, {"bits": 3, "beta1": 16, "qq_scale_bits": 3, "qq_zero_bits": 3})


def test_ptcsr_entry_after_padding_raises(device):
    params = SpqrParams(3, 4, 16, 3, 3, "bfloat16", "ptcsr")
    out = random_output(params, 8, 64, seed=5, outlier_share=0.0)
    out.update(outlier_rows=np.array([0, 0, 1], np.int32), outlier_cols=np.array([3, 9, 4], np.int32),
               outlier_values=np.array([1, 2, 3], np.float16))
    t = stored(params, out, device)
    slots = t["weight_outlier_tile_col_vals"]
    assert slots.numel() == 8 and int(slots[5]) == 0  # tile 0: 2 slots per row, row 1's second is padding
    w = ck.prepare_spqr(t, params)
    assert w.nnz == 3
    bad = dict(t)
    bad["weight_outlier_tile_col_vals"] = slots.clone()
    bad["weight_outlier_tile_col_vals"][1] = 0  # row 1: padding before its entry
    bad["weight_outlier_tile_col_vals"][5] = slots[1]
    with pytest.raises(ValueError, match="after padding"):
        ck.prepare_spqr(bad, params)


def test_geometry():
    for bits in range(1, 9):
        for beta2 in (1, 5, 8, 16, 32, 48, 128):
            g = S.geometry_of({"bits": bits, "beta1": 16, "beta2": beta2, "qq_scale_bits": 3, "qq_zero_bits": 3})
            assert g.codes * bits == 32 * g.words  # no wasted bit
            assert g.codes % g.run == 0 and g.group_cols >= beta2
            assert g.group_cols % g.codes == 0 or g.codes % g.group_cols == 0
            assert g.codes & (g.codes - 1) == 0  # the gathers' [codes, units] tiles
            if beta2 == 16 and bits in (2, 3, 4):
                assert g.group_cols == 16  # the common cases need no padding
    g3 = S.geometry_of(SpqrParams())
    assert (g3.words, g3.per_word, g3.extra, g3.runs) == (3, 10, 2, 2)


def test_dequantize_asks_the_device_for_no_size(device, monkeypatch):
    """The outliers' rows are expanded with the count the host knows (no device-to-host
    sync per prefill call); the result is the decoder's (test_dequantize_matches_ctcodec)."""
    params, out = _case(0)
    w = ck.prepare_spqr(stored(params, out, device), params)
    assert w.nnz > 0
    calls = []
    real = torch.repeat_interleave

    def spy(*args, **kwargs):
        calls.append(kwargs.get("output_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "repeat_interleave", spy)
    ck.dequantize_spqr(w, torch.float16)
    assert calls == [w.nnz]


def _view_bit(c: int, g) -> int:
    """The bit of code c in the view the matvec reads it from (written out from the
    layout: code c sits at bit p·b of its word, extra codes at bit e·b of the extra
    string; a code ending above bit 23 is read from the view shifted down by 16)."""
    pos = (c % g.per_word) * g.bits if c < g.words * g.per_word else (c - g.words * g.per_word) * g.bits
    return pos if pos + g.bits <= 23 else pos - 16


@pytest.mark.parametrize("bits,beta2,rows,mb", [(3, 16, 1, 1), (2, 16, 3, 4), (4, 8, 5, 8), (5, 48, 2, 2),
                                                (7, 16, 1, 2), (8, 32, 16, 16), (1, 8, 1, 1)])
def test_gathers_put_x_in_kernel_order(device, bits, beta2, rows, mb):
    from ctcodec_kernels.spqr_dot import DOT_ROWS, gather_x_raw_kernel

    params = SpqrParams(bits, 16, beta2, 3, 3, "float16", "csr")
    w = ck.prepare_spqr(stored(params, random_output(params, 16, 150, seed=bits), device), params)
    g = w.geometry
    wide = torch.randn(DOT_ROWS, w.n + 7, generator=torch.Generator().manual_seed(beta2)).to(torch.float16)
    x = wide[:rows, :w.n]  # a row stride that is not n
    kp = w.kperm.cpu().long()
    picked = torch.where(kp >= 0, x[:, kp.clamp(min=0)], torch.zeros(()))  # [rows, codes, NU]
    grid = (-(-w.nu // S.GATHER_UNITS), mb)

    xk = torch.full((mb, g.codes, w.nu), float("nan"), device=device)
    xs = torch.full((mb, g.runs, w.nu), float("nan"), device=device)
    S.gather_x_kernel[grid](x.to(device), w.kperm, xk, xs, rows, w.nu, wide.stride(0), BITS=g.bits, W=g.words,
                            P=g.per_word, E=g.extra, RUN=g.run, BLOCK_U=S.GATHER_UNITS)
    unscale = torch.tensor([2.0 ** -_view_bit(c, g) for c in range(g.codes)])[:, None]
    want = torch.zeros(mb, g.codes, w.nu)
    want[:rows] = picked.float() * unscale
    assert same_bits(xk.cpu(), want)  # x times a power of two: exact
    exact = picked.double().reshape(rows, g.runs, g.run, w.nu).sum(2)
    size = picked.double().abs().reshape(rows, g.runs, g.run, w.nu).sum(2)
    assert xs[rows:].eq(0).all()
    assert ((xs[:rows].cpu().double() - exact).abs() <= g.run * 2.0**-24 * size).all()

    xr = torch.full((DOT_ROWS, g.codes, w.nu), float("nan"), dtype=torch.float16, device=device)
    gather_x_raw_kernel[(grid[0], DOT_ROWS)](x.to(device), w.kperm, xr, rows, w.nu, wide.stride(0), C=g.codes,
                                             BLOCK_U=S.GATHER_UNITS)
    raw = torch.zeros(DOT_ROWS, g.codes, w.nu, dtype=torch.float16)
    raw[:rows] = picked
    assert same_bits(xr.cpu(), raw)


# ----------------------------------------------------------------------------------------
# Compiled for Hopper (sm_90) with the ptxas from the triton wheel, in a subprocess (an
# interpreted kernel cannot be compiled). M = 1 configs are checked for what they were
# built for: 16-byte loads, no spills, no int->float conversion, and no shared memory
# (layout conversions) in the main loop.

_TYPES = dict(xk_ptr="*fp32", xs_ptr="*fp32", x_ptr="*fp16", codes_ptr="*i32", stats_ptr="*u8", so_ptr="*fp16",
              o_off_ptr="*i32", o_col_ptr="*i16", o_delta_ptr="*fp32", y_ptr="*fp16", M="i32", ROWS="i32",
              stride_xm="i32", stride_ym="i32", kperm_ptr="*i32", out_ptr="*bf16", NU="i32", stride_om="i32",
              xr_ptr="*fp16")
_THREE_BIT = dict(BITS=3, W=3, P=10, E=2, RUN=16, QS=3, QZ=3, BETA1=16)


def _hopper_cases(everything: bool):
    cases = [("gather_x", S.gather_x_kernel, dict(BITS=3, W=3, P=10, E=2, RUN=16, BLOCK_U=S.GATHER_UNITS), 2, 1),
             ("dequant", S.spqr_dequant_kernel, dict(**_THREE_BIT, BLOCK_M=16, BLOCK_U=64, INTERPRET=False), 4, 1)]
    from ctcodec_kernels.spqr_dot import gather_x_raw_kernel, spqr_dot_kernel

    cases.append(("gather_x_raw", gather_x_raw_kernel, dict(C=32, BLOCK_U=S.GATHER_UNITS), 2, 1))
    for cfg in S.TENSOR_CORE_CONFIGS:
        consts = dict(**_THREE_BIT, BLOCK_M=cfg.block_m, BLOCK_U=cfg.block_u, OCH=cfg.outlier_chunk, INTERPRET=False,
                      _weights_per_thread=cfg.block_m * cfg.block_u * 32 // (32 * cfg.num_warps))
        cases.append((f"dot {cfg.block_m}x{cfg.block_u} w{cfg.num_warps}", spqr_dot_kernel, consts, cfg.num_warps,
                      cfg.num_stages))
    buckets = S.SPQR_TUNERS.items() if everything else [(1, S.SPQR_TUNERS[1])]
    for mb, tuner in buckets:
        for cfg in (c for c in tuner.configs if not c.tensor_cores):
            consts = dict(**_THREE_BIT, MB=mb, NU=256, BLOCK_M=cfg.block_m, BLOCK_U=cfg.block_u,
                          OCH=cfg.outlier_chunk, INTERPRET=False)
            cases.append((f"matvec mb={mb} {cfg.block_m}x{cfg.block_u} w{cfg.num_warps} och{cfg.outlier_chunk}",
                          S.spqr_matvec_kernel, consts,
                          cfg.num_warps, cfg.num_stages))
            cases[-1][2]["_weights_per_thread"] = mb * cfg.block_m * cfg.block_u * 32 // (32 * cfg.num_warps)
    return cases


def _loads_and_stores(sass_text: str) -> str:
    """The kernel's global loads (L) and stores (S) in program order, runs counted:
    "L20S5" is 20 loads then 5 stores; "L2S1L2S1..." a chain of dependent round trips."""
    ops = re.findall(r"\b(LDG|STG)\b", sass_text)
    runs = re.findall(r"(L+|S+)", "".join(op[0] for op in ops))
    return "".join(f"{r[0]}{len(r)}" for r in runs)


def hopper_main(everything: bool) -> int:
    """Compiles the cases for sm_90 and prints one JSON line each (run in a subprocess)."""
    import inspect

    from hopper import compile_kernel, instruction_count, main_loop, registers, sass

    for name, kernel, consts, warps, stages in _hopper_cases(everything):
        row = {"name": name, "weights_per_thread": consts.pop("_weights_per_thread", 0)}
        params = [p for p in inspect.signature(kernel.fn).parameters if p not in consts]
        try:
            c = compile_kernel(kernel, {p: _TYPES[p] for p in params}, consts,
                               aligned=("ROWS", "NU", "stride_xm", "stride_ym", "stride_om"), num_warps=warps,
                               num_stages=stages)
        except (TypeError, ImportError) as e:
            row["api_error"] = f"{type(e).__name__}: {e}"
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:2000]
        else:
            text = sass(c)
            loop = main_loop(text)
            row.update(registers=registers(c), ldg128="LDG.E.128" in text, i2f="I2F" in loop, local="STL" in text,
                       loop_shared=any(op in loop for op in ("BAR.SYNC", "STS", "LDS")),
                       mma="HMMA" in loop or "HGMMA" in loop,
                       global_memory=_loads_and_stores(text),
                       loop_instructions=instruction_count(loop))
        print(json.dumps(row), flush=True)
    return 0


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict]:
    pytest.importorskip("triton")
    from hopper import compiled_rows

    return compiled_rows(Path(__file__), "--hopper")


def test_compiles_for_hopper(compiled):
    failed = {name: row["error"] for name, row in compiled.items() if "error" in row}
    assert not failed, failed
    for name, row in compiled.items():
        if name.startswith("matvec mb=1"):
            assert row["ldg128"] and not row["local"] and not row["i2f"] and not row["loop_shared"], row
            # 3 bits: ~4.5-5 instructions per weight in the main loop with triton 3.9 (a layout
            # conversion or a constant re-made per code would add one or more per weight)
            assert 0 < row["loop_instructions"] <= 5.5 * row["weights_per_thread"], row
        if name.startswith("gather"):  # every load in flight before the first store
            assert re.fullmatch(r"L\d+S\d+", row["global_memory"]), row
        if name.startswith("dot "):  # the tensor-core SpQR kernel: MMAs in its loop, no spills
            assert row["mma"] and not row["local"], row


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(json.dumps({"error": "TRITON_INTERPRET is set: interpreted kernels cannot be compiled"}))
        sys.exit(2)
    sys.exit(hopper_main(everything="--all" in sys.argv))


def _op_args(params: SpqrParams, out: dict, device: str, x: torch.Tensor) -> tuple:
    from ctcodec.inference.ops import SPQR_ARGS

    t = stored(params, out, device)
    return (x, [t.get(name) for name in SPQR_ARGS], params.bits, params.beta1, params.beta2, params.qq_scale_bits,
            params.qq_zero_bits, DTYPES[params.dtype])


@pytest.mark.parametrize("i", [0, 1, 4])
def test_spqr_op_opcheck_and_exact_decode(i):
    """ctcodec::spqr_linear: schema, fake and CPU implementations (opcheck); the CPU one
    multiplies by ctcodec's exact decode."""
    params, out = _case(i)
    x = torch.randn(2, 3, CASES[i][8], generator=torch.Generator().manual_seed(i)).to(torch.float32)
    args = _op_args(params, out, "cpu", x)
    torch.library.opcheck(torch.ops.ctcodec.spqr_linear.default, args)
    from ctcodec.inference.unpack import dequantize_spqr

    named = stored(params, out)
    w = dequantize_spqr(named, params.bits, params.beta1, params.beta2, params.qq_scale_bits, params.qq_zero_bits,
                        DTYPES[params.dtype])
    assert torch.equal(torch.ops.ctcodec.spqr_linear(*args), torch.nn.functional.linear(x, w.float()))


@pytest.mark.parametrize("i,rows", [(0, 1), (1, 4), (4, 20)])
def test_spqr_op_cuda_implementation_uses_the_prepared_kernels(device, i, rows):
    """The function registered for the CUDA key, once the weight is prepared (as
    load_model does), runs the SpQR kernels (through the interpreter here); 20 rows take the
    dense-weight path."""
    from ctcodec.inference.ops import _spqr_linear_cuda, prepare_spqr_kernels

    params, out = _case(i)
    x = (torch.randn(rows, CASES[i][8], generator=torch.Generator().manual_seed(5)) * 0.5).to(torch.float16)
    args = _op_args(params, out, device, x.to(device))
    prepared = prepare_spqr_kernels(args[1], *args[2:7])  # kept alive here, as a module keeps it
    y = _spqr_linear_cuda(*args)
    assert y.shape == (rows, CASES[i][7]) and y.dtype == torch.float16
    if rows <= 16:
        assert_close(y, x, params, out)
    else:
        assert same_bits(y, torch.nn.functional.linear(x.to(device), ck.dequantize_spqr(prepared, torch.float16)))
    del prepared
