"""Reading compressed checkpoints back as dense tensors, one tensor at a time.

Public surface (`__all__`): `decompress_file`, `load_compressed`, what a checkpoint
declares (`declared_format`, `declared_quantization`, and per shard `shard_schemes`,
which the writers, `inspect` and `inference` use to open shards),
`compressed_tensor_count`, and the config.json helpers `format_from_config` and
`quantization_config`."""

from __future__ import annotations

import os
from typing import Any, Iterator

from . import _native
from .config_models import validate_quantization_config
from .errors import CodecError
from .extras import require
from .formats import normalize
from . import scheme_lookup
from .model_folder import CONFIG_NAME, find_config, read_json, shard_paths
from .scheme_presets import WeightSpec
from .spqr_format import SpqrParams
from .tensors import default_framework, from_raw

__all__ = [
    "compressed_tensor_count",
    "declared_format",
    "declared_quantization",
    "decompress_file",
    "format_from_config",
    "load_compressed",
    "quantization_config",
    "shard_schemes",
]


def declared_format(path: str | os.PathLike) -> str | None:
    """The format config.json declares (checked against what we support), or None."""
    cfg = find_config(path)
    if cfg is None:
        return None
    try:
        fmt = format_from_config(read_json(cfg), cfg)
        return normalize(fmt) if fmt else None
    except CodecError as e:
        msg = str(e)
        raise CodecError(msg if str(cfg) in msg else f"{cfg}: {msg}") from None


def format_from_config(config: dict[str, Any] | None, where: str | os.PathLike = CONFIG_NAME) -> str | None:
    """The sparse on-disk format a config.json declares, or None when it declares none
    (quantized formats are resolved per module, see `scheme_lookup`)."""
    if not config:
        return None
    qc = config.get("quantization_config") or config.get("compression_config")
    if qc is not None:
        validate_quantization_config(qc, where)
    if not isinstance(qc, dict) or qc.get("quant_method", "compressed-tensors") != "compressed-tensors":
        return None
    sparsity = qc.get("sparsity_config") or {}
    fmt = sparsity.get("format") if isinstance(sparsity, dict) else None
    return fmt or None


def quantization_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `quantization_config` of the config.json beside `path`, if any."""
    cfg = find_config(path)
    if cfg is None:
        return None
    config = read_json(cfg)
    qc = config.get("quantization_config") or config.get("compression_config")
    if qc is not None:
        validate_quantization_config(qc, cfg)
    if not isinstance(qc, dict) or qc.get("quant_method", "compressed-tensors") not in ("compressed-tensors", "ctcodec"):
        return None
    return qc


FRAMEWORKS = ("torch", "numpy")
READ_MODES = ("auto", "mmap", "pread")


def decompress_file(
    path: str | os.PathLike,
    *,
    framework: str | None = None,
    device: str | None = None,
    format: str | None = None,
    mode: str = "auto",
) -> Iterator[tuple[str, Any]]:
    """Yields `(name, dense tensor)` for every tensor of a file or model folder.

    Compressed weights come back under their dense name (`<module>.weight`). The format
    is the one given, else the one config.json declares, else guessed from the tensor
    names. Tensors are torch tensors when torch is installed (numpy arrays otherwise, or
    with `framework="numpy"`), moved to `device` when one is given. `mode` is how files
    are read: "mmap" maps them, "pread" uses positioned reads (for network filesystems,
    where a mapping can fault on a server hiccup), "auto" (default) maps local files and
    reads others. Arguments, the file list and config.json are checked when this is
    called; tensors are read only as the iterator advances, each decoded with all cores
    with the GIL released.
    """
    framework = framework or default_framework()
    if framework not in FRAMEWORKS:
        raise CodecError(f"unknown framework {framework!r} (torch or numpy)")
    if framework == "torch":
        require("torch", "framework='torch'", "torch")
    if mode not in READ_MODES:
        raise CodecError(f"unknown read mode {mode!r} ({', '.join(READ_MODES)})")
    if framework == "numpy" and device not in (None, "cpu"):
        raise CodecError(f"numpy arrays live on the CPU, not {device!r}")
    fmt = format or declared_format(path)
    quant = declared_quantization(path)
    shards = shard_paths(path)
    return _iter_files(shards, fmt, framework, device, mode, quant)


def _iter_files(shards, fmt, framework, device, mode, quant) -> Iterator[tuple[str, Any]]:
    for shard in shards:
        yield from _iter_file(shard, fmt, framework, device, mode, quant)


def refuse_compressed(path: str | os.PathLike) -> None:
    """Compressors take dense model folders: a folder whose config declares a
    compressed format or quantization is refused."""
    if declared_format(path) not in (None, "dense") or declared_quantization(path):
        raise CodecError(f"{path}: is already compressed")


def declared_quantization(path: str | os.PathLike) -> scheme_lookup.QuantConfig:
    """The quantization schemes config.json declares (empty when it declares none)."""
    try:
        return scheme_lookup.parse(quantization_config(path))
    except CodecError as e:
        cfg = find_config(path)
        raise CodecError(f"{cfg}: {e}") from None


def shard_schemes(shard: str | os.PathLike, quant: scheme_lookup.QuantConfig, mode: str = "auto") -> dict[str, WeightSpec | SpqrParams] | None:
    """The quantization scheme of each quantized module stored in one shard, as the
    native reader takes it: `{module: spec}` (the specs `scheme_lookup.file_schemes` makes),
    found from the shard's header only. None when `quant` (see `declared_quantization`)
    declares no quantization. Pass the result to `_native.CompressedFile`; a model
    folder needs one call per shard (each holds its own modules)."""
    if not quant:
        return None
    _meta, tensors = _native.read_header(os.fspath(shard), mode)
    return scheme_lookup.file_schemes((t[0] for t in tensors), quant, where=os.fspath(shard))


def compressed_tensor_count(path: str | os.PathLike) -> int:
    """How many tensors of a file or model folder are stored compressed (headers only)."""
    fmt, quant = declared_format(path), declared_quantization(path)
    count = 0
    for shard in shard_paths(path):
        reader = _native.CompressedFile(os.fspath(shard), fmt, "auto", shard_schemes(shard, quant))
        count += sum(1 for entry in reader.entries() if entry[3])
    return count


# Tensors are decoded in batches of up to this many bytes into one buffer each (one
# allocation on huge pages instead of a page-faulted one per tensor; small tensors decode
# in parallel). Tensors of a batch share that buffer, so keeping one keeps the batch.
BATCH_BYTES = 64 << 20


def _iter_file(path, fmt, framework, device, mode, quant):
    schemes = shard_schemes(path, quant, mode)
    reader = _native.CompressedFile(os.fspath(path), fmt, mode, schemes)
    entries = reader.entries()
    index = 0
    while index < len(entries):
        buf, slots = reader.read_batch(index, BATCH_BYTES)
        for i, offset, nbytes in slots:
            name, dtype, shape, _compressed = entries[i]
            try:
                tensor = from_raw(buf[offset : offset + nbytes], dtype, shape, framework, device)
            except CodecError as e:
                raise CodecError(f"{path}: tensor {name!r}: {e}") from None
            yield name, tensor
        index = slots[-1][0] + 1


def load_compressed(
    compressed_tensors: str | os.PathLike,
    compression_config: Any = None,
    device: str | None = "cpu",
    *,
    framework: str | None = None,
) -> Iterator[tuple[str, Any]]:
    """compressed-tensors' `load_compressed`, over our decoder.

    `compression_config` may be a format name, a dict with a `format` key, or an object
    with a `format` attribute (e.g. compressed-tensors' `BitmaskConfig`). When it is
    None the format comes from config.json or the tensor names, where compressed-tensors
    would yield the raw stored tensors.
    """
    fmt = _format_of(compression_config)
    return decompress_file(compressed_tensors, framework=framework, device=device, format=fmt)


def _format_of(config: Any) -> str | None:
    if config is None:
        return None
    if isinstance(config, str):
        return config
    if isinstance(config, dict):
        fmt = config.get("format")
    else:
        fmt = getattr(config, "format", None)
    if fmt is None:
        raise CodecError(f"compression config {config!r} names no format")
    return str(getattr(fmt, "value", fmt))
