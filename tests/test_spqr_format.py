"""The SpQR format: our decoder against the format's definition, both outlier layouts,
config handling, and malformed files."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ctcodec
from ctcodec import CodecError
from ctcodec.spqr_format import SpqrParams

from spqr_files import random_output, reference_decode, write_folder

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def decoded(folder):
    return dict(ctcodec.decompress_file(folder))


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(2, 8), beta1=st.sampled_from([1, 4, 16, 7]), beta2=st.sampled_from([8, 16, 5, 32]),
       qs=st.integers(1, 4), qz=st.integers(1, 4), m=st.integers(1, 40), n=st.integers(1, 70),
       dtype=st.sampled_from(sorted(DTYPES)), layout=st.sampled_from(["csr", "ptcsr"]), seed=st.integers(0, 99))
def test_decode_matches_the_format_definition(tmp_path_factory, bits, beta1, beta2, qs, qz, m, n, dtype, layout, seed):
    params = SpqrParams(bits, beta1, beta2, qs, qz, dtype, layout)
    out = random_output(params, m, n, seed)
    folder = write_folder(tmp_path_factory.mktemp("spqr"), params, {"layer.proj": out})
    got = decoded(folder)["layer.proj.weight"]
    want = reference_decode(params, out).to(DTYPES[dtype])
    assert got.dtype == DTYPES[dtype] and tuple(got.shape) == (m, n)
    # An outlier of +0.0 is stored as -0.0 (padding in PTCSR is all-zero bits).
    assert torch.equal(got, want)


def test_csr_and_ptcsr_files_decode_identically(tmp_path):
    base = SpqrParams(3, 16, 16, 3, 3, "bfloat16", "csr")
    out = random_output(base, 96, 80, 1, outlier_share=0.05)
    a = decoded(write_folder(tmp_path / "csr", base, {"m": out}))
    b = decoded(write_folder(tmp_path / "ptcsr", SpqrParams(**{**base.__dict__, "outlier_layout": "ptcsr"}), {"m": out}))
    assert torch.equal(a["m.weight"], b["m.weight"])


def test_other_tensors_pass_through_and_bits_are_reported(tmp_path):
    params = SpqrParams()
    out = random_output(params, 64, 64, 2, outlier_share=0.01)
    norm = torch.randn(64).to(torch.bfloat16)
    folder = write_folder(tmp_path, params, {"a.proj": out}, {"a.norm.weight": norm})
    got = decoded(folder)
    assert set(got) == {"a.proj.weight", "a.norm.weight"}
    assert torch.equal(got["a.norm.weight"], norm)
    report = ctcodec.inspect_checkpoint(folder)
    # Per row: 64 codes of 3 bits (6 words), 4 groups of 6 statistic bits (one word);
    # per 16x16 tile 64 bits of second order; 32 bits per outlier, per row offset and per
    # perm entry; the shape's two int64.
    want = (64 * 6 * 32 + 64 * 32 + 4 * 4 * 64 + 32 * len(out["outlier_rows"]) + 65 * 32 + 64 * 32 + 128) / (64 * 64)
    assert report["bits_per_param"] == pytest.approx(want, rel=1e-6)


def _corrupt(folder, name, array):
    """Rewrites one stored tensor of the folder's file."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    if array is None:
        del tensors[name]
    else:
        tensors[name] = array
    save_file(tensors, folder / "model.safetensors")


BAD = {
    "codes shape": ("m.weight_codes", lambda t: t[:-1]),
    "codes dtype": ("m.weight_codes", lambda t: t.astype(np.int64)),
    "stats missing": ("m.weight_stats", None),
    "second order shape": ("m.weight_second_order", lambda t: t[:, :-1]),
    "second order inf": ("m.weight_second_order", lambda t: np.where(np.arange(t.size).reshape(t.shape) == 3, np.float16(np.inf), t)),
    "perm repeats": ("m.weight_perm", lambda t: np.zeros_like(t)),
    "perm out of range": ("m.weight_perm", lambda t: t + 1),
    "offsets decrease": ("m.weight_outlier_row_offsets", lambda t: t[::-1].copy()),
    "offsets short": ("m.weight_outlier_row_offsets", lambda t: t[:-1]),
    "column past the end": ("m.weight_outlier_col_vals", lambda t: t | 0xFFFF),
    "shape 3-D": ("m.weight_shape", lambda t: np.array([4, 4, 4], np.int64)),
    "shape disagrees": ("m.weight_shape", lambda t: t * 2),
    "no outliers": ("m.weight_outlier_col_vals", None),
    "outlier value NaN": ("m.weight_outlier_col_vals", lambda t: (t & 0xFFFF) | np.int32(0x7E00 << 16)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_spqr_files_raise_codec_error_naming_file_and_module(tmp_path, case):
    params = SpqrParams(3, 16, 16, 3, 3, "bfloat16", "csr")
    out = random_output(params, 32, 48, 3, outlier_share=0.1)
    folder = write_folder(tmp_path / "in", params, {"m": out})
    name, edit = BAD[case]
    if edit is None:
        _corrupt(folder, name, None)
    else:
        from safetensors.numpy import load_file

        _corrupt(folder, name, edit(load_file(folder / "model.safetensors")[name]))
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(CodecError) as e:
        decoded(folder)
    assert "model.safetensors" in str(e.value) and any(k in str(e.value) for k in ('"m"', "'m'", '"m.weight', "'m.weight")), str(e.value)
    with pytest.raises(CodecError):
        ctcodec.decompress_checkpoint(folder, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.safetensors")), "no partial output"
    assert (folder / "model.safetensors").read_bytes() == before


def test_ptcsr_entry_after_padding_is_refused(tmp_path):
    params = SpqrParams(3, 4, 16, 3, 3, "bfloat16", "ptcsr")
    out = random_output(params, 8, 16, 4, outlier_share=0.0)
    out.update(outlier_rows=np.array([0], np.int32), outlier_cols=np.array([3], np.int32),
               outlier_values=np.array([1.5], np.float16))
    folder = write_folder(tmp_path, params, {"m": out})
    from safetensors.numpy import load_file

    slots = load_file(folder / "model.safetensors")["m.weight_outlier_tile_col_vals"]
    assert slots.tolist() == [(0x3E00 << 16) | 3, 0, 0, 0]
    # Row 0's second slot holds an entry while its first is padding.
    _corrupt(folder, "m.weight_outlier_tile_col_vals", np.array([0, 0, 0, 0, 0x3E000003, 0, 0, 0], np.int32))
    _corrupt(folder, "m.weight_outlier_tile_offsets", np.array([0, 8, 8], np.int32))
    with pytest.raises(CodecError, match="after padding"):
        decoded(folder)


@pytest.mark.parametrize("edit", [{"bits": 9}, {"beta1": 0}, {"dtype": "int8"}, {"outlier_layout": "coo"},
                                  {"bits": None}])
def test_malformed_spqr_config_is_refused(tmp_path, edit):
    params = SpqrParams()
    folder = write_folder(tmp_path, params, {"m": random_output(params, 16, 16, 5)})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"].update(edit)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CodecError):
        decoded(folder)


def test_pack_refuses_codes_out_of_range_and_duplicate_outliers():
    from ctcodec.spqr_format import pack

    params = SpqrParams()
    out = random_output(params, 16, 16, 6)
    with pytest.raises(CodecError, match="does not fit"):
        pack(params, "m", **{**out, "codes": out["codes"] + 8})
    dup = {**out, "outlier_rows": np.array([1, 1], np.int32), "outlier_cols": np.array([2, 2], np.int32),
           "outlier_values": np.array([1, 2], np.float16)}
    with pytest.raises(CodecError, match="twice"):
        pack(params, "m", **dup)
