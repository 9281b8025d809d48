"""A tiny hand-written safetensors byte builder for tests that need bad files.

A safetensors file is: 8-byte little-endian header length, a JSON header, then the data
section. Nothing here validates anything, so a test can write any header it likes
(raw text with duplicate keys, wrong offsets, a lying length prefix, trailing bytes).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np

# numpy dtype -> safetensors dtype name, for the arrays the tests use.
ST_DTYPE = {
    np.dtype("bool"): "BOOL",
    np.dtype("uint8"): "U8",
    np.dtype("int8"): "I8",
    np.dtype("int16"): "I16",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("float16"): "F16",
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
}

# A tensor to lay out: (name, safetensors dtype, shape, raw bytes).
Tensor = tuple[str, str, list[int], bytes]


def tensor(name: str, array: np.ndarray, dtype: str | None = None, shape: list[int] | None = None) -> Tensor:
    """A tensor from a numpy array; `dtype`/`shape` override what the header will claim."""
    array = np.ascontiguousarray(array)
    return (
        name,
        dtype or ST_DTYPE[array.dtype],
        list(array.shape) if shape is None else list(shape),
        array.tobytes(),
    )


def layout(tensors: Iterable[Tensor], metadata: dict[str, Any] | None = None) -> tuple[dict, bytes]:
    """Header dict and data section, tensors packed contiguously in the given order."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = bytearray()
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, bytes(data)


def pack(header: dict | str | bytes, data: bytes = b"", *, header_len: int | None = None, pad: bool = True) -> bytes:
    """File bytes: length prefix + header + data.

    `header` may be a dict (serialized compactly), or raw str/bytes written verbatim.
    `header_len` overrides the length prefix (to lie about it); `pad` space-pads a
    dict header to a multiple of 8 as the reference writer does.
    """
    if isinstance(header, dict):
        hb = json.dumps(header, separators=(",", ":")).encode()
        if pad:
            hb += b" " * (-len(hb) % 8)
    elif isinstance(header, str):
        hb = header.encode()
    else:
        hb = bytes(header)
    n = len(hb) if header_len is None else header_len
    return struct.pack("<Q", n) + hb + data


def build(tensors: Iterable[Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    """A well-formed file from tensors (the baseline that tests then break)."""
    header, data = layout(tensors, metadata)
    return pack(header, data)


def split(raw: bytes) -> tuple[dict, bytes]:
    """(header dict, data section) of well-formed file bytes."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def tensors_of(raw: bytes) -> dict[str, tuple[str, list[int], bytes]]:
    """{name: (dtype, shape, bytes)} of well-formed file bytes (metadata left out)."""
    header, data = split(raw)
    return {
        name: (e["dtype"], e["shape"], data[e["data_offsets"][0] : e["data_offsets"][1]])
        for name, e in header.items()
        if name != "__metadata__"
    }


def write(path: Path, raw: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


# --- sparse-bitmask companions, built by hand (independent of ctcodec's encoder) ------


def bitmask_parts(module: str, dense: np.ndarray) -> dict[str, list]:
    """The four sparse-bitmask companions of `dense`, as compressed-tensors writes them.

    Returns {part: [dtype, shape, raw bytes]} with mutable lists so a test can break one
    field and hand the result to `bitmask_tensors`.
    """
    dense = np.ascontiguousarray(dense)
    lead, cols = dense.shape[:-1], dense.shape[-1]
    rows2d = dense.reshape(-1, cols)
    nonzero = rows2d != 0
    values = rows2d[nonzero]
    mask = np.packbits(nonzero, axis=-1, bitorder="little").reshape(*lead, -1)
    counts = nonzero.sum(axis=-1).astype(np.int64)
    row_offsets = (np.cumsum(counts) - counts).reshape(lead)
    return {
        "compressed": [ST_DTYPE[dense.dtype], [values.size], values.tobytes()],
        "bitmask": ["U8", list(mask.shape), mask.tobytes()],
        "shape": ["I64", [dense.ndim], np.array(dense.shape, np.int64).tobytes()],
        "row_offsets": ["I64", list(lead), row_offsets.astype(np.int64).tobytes()],
    }


def bitmask_tensors(module: str, parts: dict[str, list]) -> list[Tensor]:
    """Tensors for `parts` (any subset, in compressed-tensors' order), named `<module>.<part>`."""
    order = ("compressed", "bitmask", "shape", "row_offsets")
    return [(f"{module}.{p}", *parts[p]) for p in order if p in parts]
