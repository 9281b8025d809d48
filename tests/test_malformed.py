"""Malformed inputs: every reader must refuse them with `CodecError`.

The contract checked for every case and every public entry point:
  * the exception is `ctcodec.CodecError` (a ValueError), never a panic, a bare
    Exception, or a panic converted to "internal error in ctcodec: ...";
  * the message names the file, and the tensor/module when one is at fault;
  * the input files are byte-for-byte unchanged;
  * `decompress_checkpoint` leaves no output shard and no temporary file behind.

Bad files are crafted with `helpers_safetensors` (independent of ctcodec's writer), and
a few positive controls make sure the crafted baselines are themselves valid, so a
failure here means the malformation was missed, not that the builder is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import ctcodec
from ctcodec import CodecError
from helpers_safetensors import bitmask_parts, bitmask_tensors, build, layout, pack, split, tensor, tensors_of, write

SHARD = "model.safetensors"
TNAME = "encoder.block.proj"  # a stored tensor name distinctive enough to grep in messages
MODULE = "model.layers.0.mlp.down_proj"  # the bitmask-compressed module
W = np.arange(1, 7, dtype=np.float32).reshape(2, 3)  # 24 bytes


def _dense(dtype=np.float32) -> np.ndarray:
    """A (4, 20) weight, about half zeros; 20 columns so each mask row has padding bits."""
    rng = np.random.default_rng(0)
    a = rng.integers(1, 100, size=(4, 20)).astype(dtype)
    a[rng.random((4, 20)) < 0.5] = 0
    a[1, :] = 0  # an all-zero row
    return a


DENSE = _dense()
SPARSE_CONFIG = {
    "architectures": ["Dummy"],
    "quantization_config": {
        "quant_method": "compressed-tensors",
        "version": "0.14.0.1",
        "sparsity_config": {"format": "sparse-bitmask", "sparsity_structure": "unstructured"},
    },
}


# --- shared plumbing ------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_model(tmp_path: Path, raw: bytes, config: dict | str | None = None) -> Path:
    """`tmp_path/src/model.safetensors` (+ config.json); returns the shard path."""
    src = tmp_path / "src"
    shard = write(src / SHARD, raw)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (src / "config.json").write_text(text)
    return shard


def expect_codec_error(call: Callable[[], object], *needles: str) -> str:
    """Runs `call`, which must raise CodecError naming every needle; returns the message.

    pytest.raises lets any other exception type (PanicException, TypeError, ...) escape
    and fail the test, so "only CodecError" is enforced by construction.
    """
    with pytest.raises(CodecError) as info:
        call()
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    # A Rust panic is caught and re-raised as CodecError("internal error ..."): still a bug.
    assert "internal error" not in msg, f"panic instead of a validation error: {msg}"
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message: {msg}"
    return msg


def check_rejected(entry: str, shard: Path, tmp_path: Path, *needles: str) -> None:
    """The entry point refuses the shard, names the needles, and changes nothing on disk."""
    src = shard.parent
    dst = tmp_path / "out"
    before = snapshot(src)
    expect_codec_error(lambda: ENTRY_POINTS[entry](shard, dst), str(shard), *needles)
    assert snapshot(src) == before, "input files were modified"
    if entry == "decompress_checkpoint":
        left = sorted(p.name for p in dst.iterdir()) if dst.exists() else []
        assert left == [], f"output folder not clean after failure: {left}"


# Every public way in. decompress_file has an mmap and a pread path; both validate.
ENTRY_POINTS: dict[str, Callable[[Path, Path], object]] = {
    "decompress_file": lambda f, dst: list(ctcodec.decompress_file(f)),
    "decompress_file_mmap": lambda f, dst: list(ctcodec.decompress_file(f, mode="mmap")),
    "decompress_file_pread": lambda f, dst: list(ctcodec.decompress_file(f, mode="pread")),
    "decompress_file_numpy": lambda f, dst: list(ctcodec.decompress_file(f, framework="numpy")),
    "decompress_file_format_arg": lambda f, dst: list(ctcodec.decompress_file(f, format="sparse-bitmask")),
    "load_compressed": lambda f, dst: list(ctcodec.load_compressed(f)),
    "load_compressed_config_dict": lambda f, dst: list(ctcodec.load_compressed(f, {"format": "sparse_bitmask"})),
    "decompress_checkpoint": lambda f, dst: ctcodec.decompress_checkpoint(f.parent, dst),
    "inspect_checkpoint": lambda f, dst: ctcodec.inspect_checkpoint(f),
}
# Header faults: the format does not matter, the read mode does.
HEADER_ENTRY_POINTS = [e for e in ENTRY_POINTS if e not in ("decompress_file_format_arg", "load_compressed_config_dict")]
# Bitmask faults: the format may come from config.json or from the caller.
BITMASK_ENTRY_POINTS = [e for e in ENTRY_POINTS if e != "decompress_file_mmap"]


# --- container (header) cases ---------------------------------------------------------


def _entry(dtype="F32", shape=(2, 3), offsets=(0, 24)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _one(entry: dict, data: bytes = W.tobytes(), **kw) -> bytes:
    """A file holding one tensor TNAME described by `entry`."""
    return pack({TNAME: entry}, data, **kw)


def _two(a: dict, b: dict, data: bytes) -> bytes:
    return pack({"a." + TNAME: a, TNAME: b}, data)


def _valid() -> bytes:
    return build([tensor(TNAME, W)])


def _raw_header(text: str, data: bytes = W.tobytes()) -> bytes:
    return pack(text.encode(), data)


def _truncated_baseline() -> bytes:
    header, data = layout(bitmask_tensors(MODULE, bitmask_parts(MODULE, DENSE)))
    return pack(header, data)[:-3]


_E = json.dumps(_entry())
# name -> (file bytes, substrings the message must hold besides the path)
HEADER_CASES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    # the 8-byte length prefix
    "empty_file": (lambda: b"", ()),
    "shorter_than_8_bytes": (lambda: b"\x10\x00\x00", ()),
    "huge_header_len": (lambda: _one(_entry(), header_len=100_000_001), ()),
    "header_len_u64_max": (lambda: _one(_entry(), header_len=2**64 - 1), ()),
    "header_len_past_eof": (lambda: pack({TNAME: _entry()}, W.tobytes(), header_len=10_000), ()),
    "header_len_zero": (lambda: pack(b"", b""), ()),
    # the JSON text
    "header_not_utf8": (lambda: pack(b'{"enc\xff\xfe":' + _E.encode() + b"}", W.tobytes()), ()),
    "header_not_json": (lambda: _raw_header('{"' + TNAME + '": {"dtype": "F32",'), ()),
    "header_trailing_garbage": (lambda: _raw_header("{}}"), ()),
    "header_json_array": (lambda: _raw_header("[]", b""), ()),
    "header_json_string": (lambda: _raw_header('"hello"', b""), ()),
    "header_json_null": (lambda: _raw_header("null", b""), ()),
    "duplicate_tensor_key": (lambda: _raw_header(f'{{"{TNAME}":{_E},"{TNAME}":{_E}}}', W.tobytes() * 2), (TNAME,)),
    # a JSON object cannot be trusted to reject duplicate fields either (the reference
    # safetensors parser refuses them: "duplicate field `dtype`")
    "duplicate_field_in_entry": (
        lambda: _raw_header(f'{{"{TNAME}":{{"dtype":"F32","dtype":"I32","shape":[2,3],"data_offsets":[0,24]}}}}'),
        (TNAME,),
    ),
    # one tensor entry
    "unknown_dtype": (lambda: _one(_entry(dtype="F33")), (TNAME, "F33")),
    "lowercase_dtype": (lambda: _one(_entry(dtype="f32")), (TNAME,)),
    "entry_not_object": (lambda: _raw_header(f'{{"{TNAME}": 5}}', b""), (TNAME,)),
    "entry_missing_dtype": (lambda: pack({TNAME: {"shape": [2, 3], "data_offsets": [0, 24]}}, W.tobytes()), (TNAME,)),
    "negative_dim": (lambda: _one(_entry(shape=(-2, 3))), (TNAME,)),
    "float_dim": (lambda: _one(_entry(shape=(2.5, 3))), (TNAME,)),
    "shape_overflows": (lambda: _one(_entry(shape=(2**40, 2**40, 2**40), offsets=(0, 0)), b""), (TNAME,)),
    "subbyte_not_whole_bytes": (lambda: _one(_entry(dtype="F4", shape=(3,), offsets=(0, 2)), b"\0\0"), (TNAME,)),
    "offsets_one_number": (lambda: _one(_entry(offsets=(0,))), (TNAME,)),
    "offsets_three_numbers": (lambda: _one({**_entry(), "data_offsets": [0, 12, 24]}), (TNAME,)),
    "offsets_negative": (lambda: _one(_entry(offsets=(-24, 0))), (TNAME,)),
    # offsets against each other and the file
    "offsets_not_from_zero": (lambda: _one(_entry(offsets=(4, 28)), b"\0" * 4 + W.tobytes()), (TNAME,)),
    "offsets_overlap": (lambda: _two(_entry(offsets=(0, 24)), _entry(offsets=(16, 40)), b"\0" * 40), (TNAME,)),
    "offsets_same_range": (lambda: _two(_entry(offsets=(0, 24)), _entry(offsets=(0, 24)), b"\0" * 24), (TNAME,)),
    "offsets_gap": (lambda: _two(_entry(offsets=(0, 24)), _entry(offsets=(28, 52)), b"\0" * 52), (TNAME,)),
    "end_before_start": (lambda: _two(_entry(offsets=(0, 24)), _entry(shape=(0,), offsets=(24, 0)), b"\0" * 24), (TNAME,)),
    "offsets_past_eof": (lambda: _one(_entry(), W.tobytes()[:20]), ()),
    "truncated_file": (_truncated_baseline, ()),
    "trailing_bytes": (lambda: _one(_entry(), W.tobytes() + b"\0\0\0\0"), ()),
    "byte_length_too_short": (lambda: _one(_entry(offsets=(0, 20)), W.tobytes()[:20]), (TNAME,)),
    "byte_length_too_long": (lambda: _one(_entry(offsets=(0, 28)), W.tobytes() + b"\0" * 4), (TNAME,)),
    # __metadata__ must map strings to strings
    "metadata_int_value": (lambda: pack({"__metadata__": {"format": 1}, TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
    "metadata_null_value": (lambda: pack({"__metadata__": {"format": None}, TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
    "metadata_nested_object": (lambda: pack({"__metadata__": {"a": {"b": "c"}}, TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
    "metadata_list_value": (lambda: pack({"__metadata__": {"a": ["b"]}, TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
    "metadata_not_object": (lambda: pack({"__metadata__": ["pt"], TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
    "metadata_string": (lambda: pack({"__metadata__": "pt", TNAME: _entry()}, W.tobytes()), ("__metadata__",)),
}


@pytest.mark.parametrize("entry", HEADER_ENTRY_POINTS)
@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_bad_container(case: str, entry: str, tmp_path: Path) -> None:
    make_raw, needles = HEADER_CASES[case]
    shard = make_model(tmp_path, make_raw())
    check_rejected(entry, shard, tmp_path, *needles)


@pytest.mark.parametrize("entry", HEADER_ENTRY_POINTS)
def test_container_baseline_is_valid(entry: str, tmp_path: Path) -> None:
    # Control: the file the header cases are variations of decodes fine everywhere.
    shard = make_model(tmp_path, _valid())
    ENTRY_POINTS[entry](shard, tmp_path / "out")
    got = dict(ctcodec.decompress_file(shard, framework="numpy"))
    np.testing.assert_array_equal(got[TNAME], W)


# --- sparse-bitmask cases -------------------------------------------------------------


def _drop(part: str):
    def edit(parts):
        del parts[part]

    return edit


def _set(part: str, dtype: str | None = None, shape: list[int] | None = None, raw: bytes | None = None):
    """Rewrites one field of one companion (what the header claims and/or its bytes)."""

    def edit(parts):
        p = parts[part]
        p[0] = dtype or p[0]
        p[1] = p[1] if shape is None else shape
        p[2] = p[2] if raw is None else raw

    return edit


def _flip_mask_bit(set_bit: bool):
    """Sets a clear bit (one more marked value) or clears a set one (one fewer)."""

    def edit(parts):
        mask = np.frombuffer(parts["bitmask"][2], np.uint8).reshape(4, 3).copy()
        bits = np.unpackbits(mask, axis=-1, count=20, bitorder="little")
        rows, cols = np.nonzero(bits == (0 if set_bit else 1))
        bits[rows[0], cols[0]] ^= 1
        parts["bitmask"][2] = np.packbits(bits, axis=-1, bitorder="little").tobytes()

    return edit


def _nnz() -> int:
    return int(np.count_nonzero(DENSE))


def _row_offsets_off_by_one(parts):
    ro = np.frombuffer(parts["row_offsets"][2], np.int64).copy()
    ro[2] += 1
    parts["row_offsets"][2] = ro.tobytes()


def _shape(*dims: int) -> bytes:
    return np.array(dims, np.int64).tobytes()


def _relabel_compressed(dtype: str, dense_dtype=np.uint8):
    """Compressed values of a 1-byte dense tensor, relabelled as `dtype` (same bytes)."""

    def edit(parts):
        fresh = bitmask_parts(MODULE, _dense(dense_dtype))
        parts.clear()
        parts.update(fresh)
        parts["compressed"][0] = dtype
        if dtype == "F4":  # two values per byte
            parts["compressed"][1] = [2 * parts["compressed"][1][0]]

    return edit


def _empty_geometry(shape: tuple[int, int], mask_shape: list[int]):
    """A dense shape with no elements, but a bitmask with bytes in it."""

    def edit(parts):
        parts.clear()
        parts["compressed"] = ["F32", [0], b""]
        parts["bitmask"] = ["U8", mask_shape, b"\0" * int(np.prod(mask_shape))]
        parts["shape"] = ["I64", [2], _shape(*shape)]

    return edit


# name -> (edit of the companions, whether the fault is visible without reading tensor
# data (so inspect_checkpoint must catch it too), substrings the message must hold)
BITMASK_CASES: dict[str, tuple[Callable, bool, tuple[str, ...]]] = {
    # a companion is missing
    "missing_bitmask": (_drop("bitmask"), True, (MODULE, "bitmask")),
    "missing_shape": (_drop("shape"), True, (MODULE, "shape")),
    "missing_compressed": (_drop("compressed"), True, (MODULE, "compressed")),
    # mask and values disagree
    "mask_marks_one_more": (_flip_mask_bit(True), False, (MODULE,)),
    "mask_marks_one_fewer": (_flip_mask_bit(False), False, (MODULE,)),
    "one_extra_value": (_set("compressed", shape=[_nnz() + 1], raw=DENSE[DENSE != 0].tobytes() + b"\0" * 4), False, (MODULE,)),
    "all_values_missing": (_set("compressed", shape=[0], raw=b""), False, (MODULE,)),
    # the bitmask itself
    "bitmask_i8": (_set("bitmask", dtype="I8"), True, (MODULE + ".bitmask", "I8")),
    "bitmask_bool": (_set("bitmask", dtype="BOOL"), True, (MODULE + ".bitmask",)),
    "bitmask_too_few_rows": (_set("bitmask", shape=[3, 3], raw=b"\xff" * 9), True, (MODULE + ".bitmask",)),
    "bitmask_too_many_rows": (_set("bitmask", shape=[5, 3], raw=b"\0" * 15), True, (MODULE + ".bitmask",)),
    "bitmask_rows_too_narrow": (_set("bitmask", shape=[4, 2], raw=b"\0" * 8), True, (MODULE + ".bitmask",)),
    "bitmask_rows_too_wide": (_set("bitmask", shape=[4, 4], raw=b"\0" * 16), True, (MODULE + ".bitmask",)),
    "bitmask_flat": (_set("bitmask", shape=[12]), True, (MODULE + ".bitmask",)),
    "bitmask_transposed": (_set("bitmask", shape=[3, 4]), True, (MODULE + ".bitmask",)),
    # the values
    "compressed_2d": (_set("compressed", shape=[1, _nnz()]), True, (MODULE + ".compressed",)),
    "compressed_scalar": (_set("compressed", shape=[], raw=b"\0" * 4), True, (MODULE + ".compressed",)),
    "compressed_f8_e8m0": (_relabel_compressed("F8_E8M0"), True, (MODULE, "F8_E8M0")),
    "compressed_f4": (_relabel_compressed("F4"), True, (MODULE, "F4")),
    # the shape vector
    "shape_negative_dim": (_set("shape", raw=_shape(-4, 20)), True, (MODULE + ".shape", "-4")),
    "shape_f32": (_set("shape", dtype="F32", shape=[2], raw=np.array([4, 20], np.float32).tobytes()), True, (MODULE + ".shape",)),
    "shape_f64_same_bytes": (_set("shape", dtype="F64"), True, (MODULE + ".shape",)),
    "shape_u8": (_set("shape", dtype="U8", shape=[2], raw=bytes([4, 20])), True, (MODULE + ".shape",)),
    "shape_2d": (_set("shape", shape=[2, 2], raw=_shape(2, 2, 1, 20)), True, (MODULE + ".shape",)),
    "shape_empty": (_set("shape", shape=[0], raw=b""), True, (MODULE + ".shape",)),
    "shape_too_many_rows": (_set("shape", raw=_shape(5, 20)), True, (MODULE,)),
    "shape_too_many_cols": (_set("shape", raw=_shape(4, 40)), True, (MODULE,)),
    "shape_rank1": (_set("shape", shape=[1], raw=_shape(80)), True, (MODULE,)),
    # row_offsets, when present, must agree with the mask
    "row_offsets_inconsistent": (_row_offsets_off_by_one, False, (MODULE,)),
    "row_offsets_i32": (_set("row_offsets", dtype="I32", shape=[4], raw=np.zeros(4, np.int32).tobytes()), True, (MODULE + ".row_offsets",)),
    "row_offsets_wrong_length": (_set("row_offsets", shape=[3], raw=np.zeros(3, np.int64).tobytes()), True, (MODULE + ".row_offsets",)),
    # a dense shape with no elements but a non-empty mask: still "wrong size for the shape"
    "no_cols_nonempty_mask": (_empty_geometry((4, 0), [4, 1]), True, (MODULE,)),
    "no_rows_nonempty_mask": (_empty_geometry((0, 20), [4, 3]), True, (MODULE,)),
}

def _bitmask_file(edit: Callable | None = None, extra: list | None = None) -> bytes:
    parts = bitmask_parts(MODULE, DENSE)
    if edit is not None:
        edit(parts)
    tensors = [tensor("model.norm.weight", np.ones(20, np.float32))] + bitmask_tensors(MODULE, parts) + (extra or [])
    return build(tensors)


def _bitmask_params():
    for case, (_edit, header_level, _needles) in BITMASK_CASES.items():
        for entry in BITMASK_ENTRY_POINTS:
            # Faults only the data reveals: inspect_checkpoint reads headers, not tensor bytes.
            if entry == "inspect_checkpoint" and not header_level:
                continue
            yield pytest.param(case, entry, id=f"{case}-{entry}")


@pytest.mark.parametrize("case, entry", list(_bitmask_params()))
def test_bad_bitmask(case: str, entry: str, tmp_path: Path) -> None:
    # config.json declares sparse-bitmask, as compressed-tensors writes it.
    edit, _header_level, needles = BITMASK_CASES[case]
    shard = make_model(tmp_path, _bitmask_file(edit), SPARSE_CONFIG)
    check_rejected(entry, shard, tmp_path, *needles)


_DETECTABLE = [c for c in BITMASK_CASES if c not in ("missing_bitmask", "missing_compressed")]


@pytest.mark.parametrize("case", _DETECTABLE)
def test_bad_bitmask_detected_format(case: str, tmp_path: Path) -> None:
    # No config.json: the format is guessed from the tensor names; validation is the same.
    edit, _header_level, needles = BITMASK_CASES[case]
    shard = make_model(tmp_path, _bitmask_file(edit))
    check_rejected("decompress_file", shard, tmp_path, *needles)
    check_rejected("decompress_checkpoint", shard, tmp_path, *needles)


@pytest.mark.parametrize("missing", ["bitmask", "compressed"])
def test_incomplete_group_not_taken_for_dense(missing: str, tmp_path: Path) -> None:
    # No config.json and the only group lacks `.bitmask` or `.compressed`: the names are
    # unmistakably sparse-bitmask companions, so yielding them as plain tensors (and no
    # `<module>.weight`) would silently hand the caller garbage.
    parts = bitmask_parts(MODULE, DENSE)
    del parts[missing]
    shard = make_model(tmp_path, build(bitmask_tensors(MODULE, parts)))
    check_rejected("decompress_file", shard, tmp_path, MODULE)


@pytest.mark.parametrize("entry", ["decompress_file", "load_compressed", "decompress_checkpoint", "inspect_checkpoint"])
def test_dense_name_collision(entry: str, tmp_path: Path) -> None:
    # `<m>.weight` stored as is next to `<m>`'s companions: two dense tensors would come
    # back under one name; the reader must refuse instead of yielding both.
    extra = [tensor(MODULE + ".weight", np.ones((4, 20), np.float32))]
    shard = make_model(tmp_path, _bitmask_file(extra=extra), SPARSE_CONFIG)
    check_rejected(entry, shard, tmp_path, MODULE + ".weight")


@pytest.mark.parametrize("entry", BITMASK_ENTRY_POINTS)
def test_bitmask_baseline_is_valid(entry: str, tmp_path: Path) -> None:
    # Control: the hand-built companions (the starting point of every case above) are
    # valid, decode to DENSE, and round-trip through ctcodec's own writer byte for byte.
    raw = _bitmask_file()
    shard = make_model(tmp_path, raw, SPARSE_CONFIG)
    ENTRY_POINTS[entry](shard, tmp_path / "out")
    got = dict(ctcodec.decompress_file(shard, framework="numpy"))
    np.testing.assert_array_equal(got[MODULE + ".weight"], DENSE)
    ours = tmp_path / "ours.safetensors"
    ctcodec.save_compressed({MODULE + ".weight": DENSE}, ours)
    assert tensors_of(ours.read_bytes()) == tensors_of(build(bitmask_tensors(MODULE, bitmask_parts(MODULE, DENSE))))


def test_huge_row_count_with_no_columns_does_not_abort(tmp_path: Path) -> None:
    # Dense shape [2**40, 0] with an empty mask: a 150-byte file. It holds no elements,
    # so decoding must not allocate per-row state for 2**40 rows (that aborts the whole
    # interpreter with "memory allocation of 8796093022208 bytes failed"). Run in a child
    # process so an abort fails this test instead of killing the session.
    parts = {
        "compressed": ["F32", [0], b""],
        "bitmask": ["U8", [0, 0], b""],
        "shape": ["I64", [2], _shape(2**40, 0)],
    }
    shard = make_model(tmp_path, build(bitmask_tensors(MODULE, parts)), SPARSE_CONFIG)
    code = textwrap.dedent(
        f"""
        import ctcodec
        try:
            out = list(ctcodec.decompress_file({str(shard)!r}, framework="numpy"))
            print("DECODED", [(k, v.shape) for k, v in out])
        except ctcodec.CodecError as e:
            print("CODECERROR", e)
        """
    )
    before = snapshot(shard.parent)
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-500:]}"
    assert "internal error" not in proc.stdout, proc.stdout
    assert "DECODED" in proc.stdout or str(shard) in proc.stdout, proc.stdout
    assert snapshot(shard.parent) == before


# --- multi-shard checkpoints ------------------------------------------------------------


def test_checkpoint_bad_second_shard_leaves_no_partial_output(tmp_path: Path) -> None:
    # Shard 1 is fine, shard 2 is corrupt: no output file named like shard 2, no temp file.
    src, dst = tmp_path / "src", tmp_path / "out"
    good = write(src / "model-00001-of-00002.safetensors", _bitmask_file())
    parts = bitmask_parts("model.layers.1.mlp.down_proj", DENSE)
    _row_offsets_off_by_one(parts)
    bad = write(src / "model-00002-of-00002.safetensors", build(bitmask_tensors("model.layers.1.mlp.down_proj", parts)))
    weight_map = {n: good.name for n in split(good.read_bytes())[0]} | {n: bad.name for n in split(bad.read_bytes())[0]}
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (src / "config.json").write_text(json.dumps(SPARSE_CONFIG))
    before = snapshot(src)
    expect_codec_error(lambda: ctcodec.decompress_checkpoint(src, dst), str(bad), "model.layers.1.mlp.down_proj")
    assert snapshot(src) == before
    # The output folder did not exist before: a failed run removes it whole.
    assert not dst.exists()
    # One that existed keeps what it held, and gains no shard, temp file or index.
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    expect_codec_error(lambda: ctcodec.decompress_checkpoint(src, dst, overwrite=True), str(bad),
                       "model.layers.1.mlp.down_proj")
    assert sorted(p.name for p in dst.iterdir()) == ["notes.txt"]


# --- unknown format names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda f: list(ctcodec.decompress_file(f, format="bogus")),
        lambda f: list(ctcodec.load_compressed(f, "bogus")),
        lambda f: list(ctcodec.load_compressed(f, {"format": "bogus"})),
    ],
    ids=["decompress_file", "load_compressed_str", "load_compressed_dict"],
)
def test_unknown_format_argument(call, tmp_path: Path) -> None:
    shard = make_model(tmp_path, _bitmask_file())
    before = snapshot(shard.parent)
    expect_codec_error(lambda: call(shard), "bogus")
    assert snapshot(shard.parent) == before


def test_compression_config_without_format(tmp_path: Path) -> None:
    shard = make_model(tmp_path, _bitmask_file())
    expect_codec_error(lambda: list(ctcodec.load_compressed(shard, {"sparsity_structure": "2:4"})), "format")


def test_unknown_read_mode(tmp_path: Path) -> None:
    shard = make_model(tmp_path, _valid())
    expect_codec_error(lambda: list(ctcodec.decompress_file(shard, mode="bogus")), "bogus")


@pytest.mark.parametrize("kw", [{"format": "bogus"}, {"compression_format": "bogus"}])
def test_save_compressed_unknown_format(kw: dict, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    expect_codec_error(lambda: ctcodec.save_compressed({"m.weight": DENSE}, out, **kw), "bogus")
    assert list(tmp_path.iterdir()) == [], "save_compressed left a file behind"


# config.json next to the file decides the format; a bad one must be refused, naming
# config.json (or the shard) so the user knows which file to fix.
def _config(sparsity_format=None, **qc) -> dict:
    cfg = {"quant_method": "compressed-tensors", **qc}
    if sparsity_format is not None:
        cfg["sparsity_config"] = {"format": sparsity_format}
    return {"quantization_config": cfg}


CONFIG_CASES = {
    "unknown_sparsity_format": (_config("bogus"), "bogus"),
    "marlin_24_format": (_config("marlin-24"), "marlin-24"),
    "group_without_targets": (_config(None, format="pack-quantized", config_groups={"g": {}}), "targets"),
    "unknown_preset_group": (_config(None, format="pack-quantized", config_groups={"W9A9": ["Linear"]}), "W9A9"),
    "config_not_json": ("{not json", "config.json"),
    "config_not_object": ("[1, 2]", "config.json"),
}


@pytest.mark.parametrize("entry", ["decompress_file", "load_compressed", "decompress_checkpoint", "inspect_checkpoint"])
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case: str, entry: str, tmp_path: Path) -> None:
    config, needle = CONFIG_CASES[case]
    shard = make_model(tmp_path, _bitmask_file(), config)
    src, dst = shard.parent, tmp_path / "out"
    before = snapshot(src)
    msg = expect_codec_error(lambda: ENTRY_POINTS[entry](shard, dst), needle)
    assert str(src / "config.json") in msg or str(shard) in msg, f"message names neither config.json nor the shard: {msg}"
    assert snapshot(src) == before
    if dst.exists():
        assert list(dst.iterdir()) == []
