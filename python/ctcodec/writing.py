"""Writing tensors from memory as a compressed safetensors file."""

from __future__ import annotations

import os
from typing import Any, Mapping

from . import _native
from .errors import CodecError
from .formats import normalize
from .tensors import to_raw


def save_compressed(
    tensors: Mapping[str, Any],
    save_path: str | os.PathLike,
    format: str | None = "sparse-bitmask",
    *,
    compression_format: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[dict]:
    """Writes `tensors` to `save_path`, compressing as compressed-tensors 0.14 did.

    With `sparse-bitmask`, every tensor whose name ends in `.weight` and has rank >= 1
    is compressed under its module name; with `sparse-24-bitmask`, every 2-D `.weight`
    (which must already be 2:4 sparse); everything else is stored as is. `dense`
    stores everything as is. The file appears atomically. Returns one stats dict per
    input tensor (`nonzero`, `bytes_in`, `bytes_out`, ...).
    """
    fmt = normalize(compression_format or format or "dense")
    names, raws, select = [], [], []
    for name, tensor in tensors.items():
        try:
            dtype, shape, raw = to_raw(tensor)
        except CodecError as e:
            raise CodecError(f"{os.fspath(save_path)}: tensor {name!r}: {e}") from None
        names.append(name)
        raws.append((name, dtype, shape, raw))
        weight = name.endswith(".weight") and name != ".weight"
        select.append(weight and (len(shape) >= 1 if fmt == "sparse-bitmask" else
                                  len(shape) == 2 if fmt == "sparse-24-bitmask" else False))
    meta = list(metadata.items()) if metadata else None
    return _native.write_tensors(os.fspath(save_path), raws, select, meta, None, fmt == "sparse-24-bitmask")
