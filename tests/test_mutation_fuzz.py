"""Mutation fuzz of whole compressed folders, every format: bit flips, byte runs,
truncation and header edits of the safetensors shard. The only outcomes allowed are a
decode, a CodecError or an OSError; never another exception, a crash or a hang.
CTCODEC_FUZZ_EXAMPLES sets how many mutations run (a bounded number in CI)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctcodec
from model_folders import model_folder

SCHEMES = {
    "sparse-bitmask": {},
    "sparse-24+W8A8": {"scheme": "W8A8", "sparsity": "2:4", "format": "sparse-24-bitmask"},
    "W4A16": {"scheme": "W4A16", "group_size": 32},
    "W4A16_ASYM": {"scheme": "W4A16_ASYM", "group_size": 32},
    "W3A16": {"scheme": "W3A16", "group_size": 32},
    "W8A8": {"scheme": "W8A8"},
    "FP8_DYNAMIC": {"scheme": "FP8_DYNAMIC"},
    "NVFP4A16": {"scheme": "NVFP4A16"},
    "MXFP4A16": {"scheme": "MXFP4A16"},
    "marlin-24": {"scheme": "W4A16", "group_size": 128, "sparsity": "2:4", "format": "marlin-24"},
}
EXAMPLES = int(os.environ.get("CTCODEC_FUZZ_EXAMPLES", "200"))
HANG_SECONDS = 20


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    src = model_folder(root / "dense", layers=2, widths=(128, 64))
    out = {}
    for name, kwargs in SCHEMES.items():
        out[name] = root / name
        ctcodec.compress_checkpoint(src, out[name], **kwargs)
    out["spqr"] = _spqr_folder(root / "spqr")
    return out


def _spqr_folder(folder: Path) -> Path:
    from spqr_files import random_output, write_folder

    from ctcodec.spqr_format import SpqrParams

    params = SpqrParams(bits=3, beta1=16, beta2=16, qq_scale_bits=3, qq_zero_bits=3, dtype="float16")
    weights = {"model.layers.0.mlp.up_proj": random_output(params, 32, 48, seed=1)}
    return write_folder(folder, params, weights)


def _header(data: bytes) -> tuple[int, dict]:
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n])


def _edit_header(data: bytes, draw) -> bytes:
    """Changes one field of one tensor (dtype, a shape entry, an offset) in the JSON header."""
    n, header = _header(data)
    names = sorted(k for k in header if k != "__metadata__")
    entry = header[names[draw(st.integers(0, len(names) - 1))]]
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    if field == "dtype":
        entry["dtype"] = draw(st.sampled_from(["F32", "BF16", "F16", "I8", "U8", "I32", "I64", "F8_E4M3", "BOOL", "X"]))
    elif entry[field]:
        i = draw(st.integers(0, len(entry[field]) - 1))
        entry[field][i] = draw(st.sampled_from([0, 1, -1, 2**31, 2**63 - 1])
                               | st.integers(0, 4 * max(entry[field][i], 1)))
    else:
        entry[field] = [draw(st.integers(0, 64))]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def _mutate(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["flip", "run", "truncate", "header"]))
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "run":
        start = draw(st.integers(0, len(buf) - 1))
        run = draw(st.binary(min_size=1, max_size=64))
        buf[start : start + len(run)] = run
    elif kind == "truncate":
        del buf[draw(st.integers(0, len(buf) - 1)) :]
    else:
        return _edit_header(data, draw)
    return bytes(buf)


def _on_alarm(_signum, _frame):
    raise TimeoutError("decode hung")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(SCHEMES) + ["spqr"]), data=st.data())
def test_mutated_folders_decode_or_raise_codec_error(kind, data, folders, tmp_path_factory):
    src = folders[kind]
    folder = tmp_path_factory.mktemp("m")
    for f in src.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    shard = folder / "model.safetensors"
    shard.write_bytes(_mutate(shard.read_bytes(), data.draw))
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_SECONDS)
    try:
        for read in (lambda: list(ctcodec.decompress_file(folder, framework="numpy")),
                     lambda: list(ctcodec.decompress_file(folder, framework="numpy", mode="pread")),
                     lambda: ctcodec.inspect_checkpoint(folder)):
            try:
                out = read()
            except (ctcodec.CodecError, OSError):
                continue
            if isinstance(out, list):
                assert all(isinstance(t, np.ndarray) for _n, t in out)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
