"""Property tests: save_compressed then decompress_file gives back every tensor exactly
(zeros, including -0.0, come back as +0.0, which is the format's rule)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_data import ALL_DTYPES, canonical, make_tensor, same_bits, seeds, shapes, zero_shares

import ctcodec


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from(ALL_DTYPES), shape=shapes, zero_share=zero_shares, seed=seeds)
def test_round_trip_is_exact(tmp_path_factory, dtype, shape, zero_share, seed):
    t = make_tensor(dtype, shape, zero_share, seed)
    path = tmp_path_factory.mktemp("rt") / "m.safetensors"
    ctcodec.save_compressed({"layer.weight": t, "layer.bias": t.reshape(-1)[:3].clone()}, path)
    out = dict(ctcodec.decompress_file(path))
    assert set(out) == {"layer.weight", "layer.bias"}
    assert same_bits(out["layer.weight"], canonical(t))
    assert same_bits(out["layer.bias"], t.reshape(-1)[:3])  # passthrough keeps -0.0 and all


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_special_values_survive(tmp_path, dtype):
    t = torch.tensor(
        [[0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-3, -2.5, 0.0, 0.0, 7.0]], dtype=dtype
    )
    ctcodec.save_compressed({"w.weight": t}, tmp_path / "f.safetensors")
    (name, back), = ctcodec.decompress_file(tmp_path / "f.safetensors")
    assert name == "w.weight"
    assert same_bits(back, canonical(t))
    assert torch.isnan(back[0, 2]) and back[0, 3] == float("inf") and back[0, 1].item() == 0.0
    assert not torch.signbit(back[0, 1])  # -0.0 is dropped as a zero and decodes as +0.0


def test_all_zero_and_no_zero_and_empty_rows(tmp_path):
    tensors = {
        "zeros.weight": torch.zeros(4, 9),
        "dense.weight": torch.arange(1, 37, dtype=torch.float32).reshape(4, 9),
        "rows.weight": torch.tensor([[0.0] * 9, [1.0] * 9, [0.0] * 9]),
        "empty.weight": torch.zeros(0, 5),
    }
    stats = {s["name"]: s for s in ctcodec.save_compressed(tensors, tmp_path / "f.safetensors")}
    assert stats["zeros.weight"]["nonzero"] == 0 and stats["dense.weight"]["nonzero"] == 36
    out = dict(ctcodec.decompress_file(tmp_path / "f.safetensors"))
    for k, v in tensors.items():
        assert same_bits(out[k], v)


def test_numpy_framework_and_numpy_inputs(tmp_path):
    a = np.where(np.arange(30) % 3 == 0, 0, np.arange(30)).astype(np.float32).reshape(3, 10)
    ctcodec.save_compressed({"x.weight": a}, tmp_path / "n.safetensors")
    (name, back), = ctcodec.decompress_file(tmp_path / "n.safetensors", framework="numpy")
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, a)


def test_bf16_as_numpy_uses_ml_dtypes(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = torch.tensor([[0.0, 1.5, 0.0, -2.0]], dtype=torch.bfloat16)
    ctcodec.save_compressed({"x.weight": t}, tmp_path / "b.safetensors")
    (_, back), = ctcodec.decompress_file(tmp_path / "b.safetensors", framework="numpy")
    assert back.dtype == np.dtype(ml_dtypes.bfloat16)
    assert back.astype(np.float32).tolist() == [[0.0, 1.5, 0.0, -2.0]]


def test_iterator_is_lazy(tmp_path):
    ctcodec.save_compressed({f"l{i}.weight": torch.eye(4) for i in range(3)}, tmp_path / "f.safetensors")
    it = ctcodec.decompress_file(tmp_path / "f.safetensors")
    (tmp_path / "f.safetensors").unlink()  # nothing has been opened yet, so this must surface on first next()
    with pytest.raises(FileNotFoundError):
        next(it)


def test_pread_mode_matches_mmap(tmp_path):
    t = make_tensor(torch.bfloat16, [17, 33], 0.5, 7)
    ctcodec.save_compressed({"a.weight": t}, tmp_path / "f.safetensors")
    a = dict(ctcodec.decompress_file(tmp_path / "f.safetensors", mode="mmap"))
    b = dict(ctcodec.decompress_file(tmp_path / "f.safetensors", mode="pread"))
    assert same_bits(a["a.weight"], b["a.weight"]) and same_bits(a["a.weight"], canonical(t))


def test_dense_format_writes_plain_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    t = {"a.weight": make_tensor(torch.float16, [5, 6], 0.5, 1), "b": torch.arange(4)}
    ctcodec.save_compressed(t, tmp_path / "ours.safetensors", format="dense")
    save_file(t, tmp_path / "ref.safetensors")
    # Same layout rules as the reference writer, so the bytes are identical.
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    back = load_file(tmp_path / "ours.safetensors")
    assert all(same_bits(back[k], v) for k, v in t.items())


def test_batches_share_a_buffer_but_not_values(tmp_path, monkeypatch):
    from ctcodec import reading

    tensors = {f"l{i}.weight": make_tensor(torch.bfloat16, [33, 70], 0.5, i) for i in range(7)}
    # one tensor above the row-splitting threshold (8 MiB), which takes the other code path
    tensors["big.weight"] = make_tensor(torch.bfloat16, [2048, 2100], 0.5, 99)
    ctcodec.save_compressed(tensors, tmp_path / "f.safetensors")
    monkeypatch.setattr(reading, "BATCH_BYTES", 3 * 33 * 70 * 2)  # about three small tensors a batch
    out = dict(ctcodec.decompress_file(tmp_path / "f.safetensors"))
    for k, v in tensors.items():
        assert same_bits(out[k], canonical(v)), k
    out["l0.weight"].fill_(1.0)  # writing one tensor must not touch its batch neighbours
    assert same_bits(out["l1.weight"], canonical(tensors["l1.weight"]))

    reader = ctcodec._native.CompressedFile(str(tmp_path / "f.safetensors"))
    buf, slots = reader.read_batch(0, 1)
    assert len(slots) == 1  # always at least one tensor, even past the byte budget
    assert all(off % 64 == 0 for _, off, _ in reader.read_batch(0, 10**9)[1])


def test_streaming_reuses_batch_buffers(tmp_path, monkeypatch):
    from ctcodec import reading

    tensors = {f"l{i}.weight": make_tensor(torch.float32, [64, 64], 0.5, i) for i in range(12)}
    ctcodec.save_compressed(tensors, tmp_path / "f.safetensors")
    monkeypatch.setattr(reading, "BATCH_BYTES", 64 * 64 * 4)  # one tensor per batch
    hits_before, _ = ctcodec._native.pool_stats()
    for name, t in ctcodec.decompress_file(tmp_path / "f.safetensors"):
        assert same_bits(t, canonical(tensors[name]))  # a recycled buffer holds no stale data
        del t
    hits_after, _ = ctcodec._native.pool_stats()
    assert hits_after - hits_before >= 8  # dropped tensors hand their buffers back
