"""On-device sparse-bitmask and sparse-24-bitmask decompression against ctcodec's decode,
bit for bit (kept -0.0 and NaN payloads included), from device and from host tensors;
and malformed inputs refused with a ValueError before any kernel is launched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import same_bits
from safetensors.torch import load_file

import ctcodec
import ctcodec_kernels as ck
import ctcodec_kernels.bitmask as bm


def _sparse(seed: int, shape, dtype, density: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g).to(dtype)
    return torch.where(torch.rand(*shape, generator=g) < density, t, torch.zeros((), dtype=dtype))


def _two_four(seed: int, rows: int, cols: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(rows, cols // 4, 4, generator=g).argsort(-1) < 2
    t = torch.randn(rows, cols, generator=g).to(dtype) * keep.reshape(rows, cols)
    t[0, :4] = 0  # a group with no non-zero: two zeros are kept
    if cols >= 8:
        t[-1, 4:8] = torch.tensor([0.0, -0.0, 1.5, 0.0]).to(dtype)  # one non-zero and a -0.0
    return t


def _roundtrip(tmp_path: Path, tensors: dict, fmt: str):
    path = tmp_path / f"{fmt}.safetensors"
    ctcodec.save_compressed(tensors, path, format=fmt)
    return load_file(path), dict(ctcodec.decompress_file(path, format=fmt))


SHAPES = [(6, 20), (1, 8), (5, 1), (13,), (2, 3, 5), (3, 0), (0, 5), (64, 200)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_bitmask_matches_ctcodec(tmp_path, device, dtype):
    tensors = {f"m{i}.weight": _sparse(i, s, dtype, 0.5) for i, s in enumerate(SHAPES)}
    tensors["dense.weight"] = _sparse(9, (4, 9), dtype, 1.0)
    tensors["empty.weight"] = _sparse(9, (4, 9), dtype, 0.0)
    stored, decoded = _roundtrip(tmp_path, tensors, "sparse-bitmask")
    for name in tensors:
        m = name.rsplit(".", 1)[0]
        parts = [stored[f"{m}.{p}"] for p in ("compressed", "bitmask", "row_offsets", "shape")]
        dense = ck.decompress_bitmask(*[p.to(device) for p in parts[:3]], parts[3])
        assert same_bits(dense, decoded[name]), name
        assert same_bits(ck.decompress_bitmask_from_host(*parts, device=device), decoded[name]), name


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 300), density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 999))
def test_bitmask_random_shapes(tmp_path_factory, device, rows, cols, density, seed):
    t = _sparse(seed, (rows, cols), torch.bfloat16, density)
    stored, decoded = _roundtrip(tmp_path_factory.mktemp("bm"), {"a.weight": t}, "sparse-bitmask")
    parts = [stored[f"a.{p}"].to(device) for p in ("compressed", "bitmask", "row_offsets", "shape")]
    assert same_bits(ck.decompress_bitmask(*parts), decoded["a.weight"])


@pytest.mark.parametrize("rows,cols", [(4, 16), (3, 12), (9, 200), (1, 4)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sparse24_matches_ctcodec(tmp_path, device, rows, cols, dtype):
    stored, decoded = _roundtrip(tmp_path, {"a.weight": _two_four(rows * cols, rows, cols, dtype)},
                                 "sparse-24-bitmask")
    parts = [stored[f"a.{p}"] for p in ("compressed", "bitmask", "shape")]
    assert parts[0].shape == (rows, cols // 2)  # the kept values, two per group of four
    dense = ck.decompress_sparse24(parts[0].to(device), parts[1].to(device), parts[2])
    assert same_bits(dense, decoded["a.weight"])
    assert same_bits(ck.decompress_sparse24_from_host(*parts, device=device), decoded["a.weight"])


@pytest.fixture
def no_launch(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a kernel was launched for malformed input")

    monkeypatch.setattr(bm, "_expand", refuse)


def test_malformed_bitmask(tmp_path, device, no_launch):
    stored, _ = _roundtrip(tmp_path, {"a.weight": _sparse(1, (6, 20), torch.bfloat16, 0.5)}, "sparse-bitmask")
    vals, mask, offs, shape = (stored[f"a.{p}"].to(device) for p in ("compressed", "bitmask", "row_offsets", "shape"))
    with pytest.raises(ValueError, match="set bits but compressed holds"):
        ck.decompress_bitmask(vals[:-1], mask, offs, shape)
    bad = mask.clone()
    bad[2, 0] ^= 1  # one more (or one fewer) kept value in row 2
    with pytest.raises(ValueError, match="set bits but compressed holds"):
        ck.decompress_bitmask(vals, bad, offs, shape)
    moved = mask.clone()
    moved[2, 0], moved[3, 0] = mask[3, 0], mask[2, 0]  # same total, rows disagree with offsets
    if not torch.equal(moved, mask):
        with pytest.raises(ValueError, match="row_offsets do not match"):
            ck.decompress_bitmask(vals, moved, offs, shape)
    with pytest.raises(ValueError, match="row_offsets do not match"):
        ck.decompress_bitmask(vals, mask, offs + 1, shape)
    stray = mask.clone()
    stray[0, -1] |= 0x80  # column 23 of a 20-column row
    with pytest.raises(ValueError, match="beyond column 20"):
        ck.decompress_bitmask(vals, stray, offs, shape)
    with pytest.raises(ValueError, match="bitmask must be uint8"):
        ck.decompress_bitmask(vals, mask[:, :2], offs, shape)
    with pytest.raises(ValueError, match="row_offsets must be"):
        ck.decompress_bitmask(vals, mask, offs[:3], shape)


def test_malformed_sparse24(tmp_path, device, no_launch):
    stored, _ = _roundtrip(tmp_path, {"a.weight": _two_four(3, 4, 16, torch.bfloat16)}, "sparse-24-bitmask")
    vals, mask, shape = (stored[f"a.{p}"].to(device) for p in ("compressed", "bitmask", "shape"))
    bad = mask.clone()
    bad[1, 0] |= 0xFF  # row 1 keeps more than half its columns
    with pytest.raises(ValueError, match="row 1 of the bitmask keeps"):
        ck.decompress_sparse24(vals, bad, shape)
    with pytest.raises(ValueError, match=r"compressed must be \[4, 8\]"):
        ck.decompress_sparse24(vals[:, :-1], mask, shape)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        ck.decompress_sparse24(vals, mask[:, :2], [4, 14])
    with pytest.raises(ValueError, match="shape must be 2-D"):
        ck.decompress_sparse24(vals, mask, [4, 4, 4])
