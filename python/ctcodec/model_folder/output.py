"""Writing a model folder: the input check, the destination of a run, each shard
(resumably), the index, config.json, and a copy of every other file of the input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .. import _native
from ..errors import CodecError
from ..tensors import nbytes
from .files import CONFIG_NAME, INDEX_NAME, read_json, write_json_atomic
from .run import run_folder


def check_input_folder(src: Path) -> None:
    """Refuses an input that does not exist or is a file rather than a model folder."""
    if not src.exists():
        raise CodecError(f"{src}: does not exist")
    if not src.is_dir():
        raise CodecError(f"{src}: is a file, not a model folder")


def output_folder(src: Path, dst: Path, overwrite: bool):
    """The output folder of a run that cannot resume (calibrated compression keeps its
    per-layer state in memory): a rerun after a kill starts over."""
    return run_folder(src, dst, overwrite, key=None)


def write_resumably(out, jobs: list, write_one) -> list:
    """Writes each job's shard unless an earlier, interrupted run of the same command
    finished it (verified against the manifest); returns each shard's statistics.

    `out` is the `RunFolder` being written; a job's second item is the shard's output
    path; `write_one(job)` writes it and returns its statistics."""
    results = []
    for job in jobs:
        name = Path(job[1]).name
        stats = out.done(name)
        if stats is None:
            stats = write_one(job)
            out.record(name, stats)
        results.append(stats)
    return results


def write_index(src: Path, dst: Path, shards: list[Path]) -> None:
    """Rewrites the index from the headers of the shards just written (nothing when
    `src` has no index: a single-shard model)."""
    index_path = src / INDEX_NAME
    if not index_path.is_file():
        return
    index = read_json(index_path)
    weight_map, total = {}, 0
    for shard in shards:
        _meta, tensors = _native.read_header(os.fspath(dst / shard.name))
        for name, dtype, shape in tensors:
            weight_map[name] = shard.name
            total += nbytes(dtype, shape)
    index["weight_map"] = dict(sorted(weight_map.items()))
    index.setdefault("metadata", {})["total_size"] = total
    write_json_atomic(dst / INDEX_NAME, index)


def write_config(dst: Path, config: dict[str, Any], sort_keys: bool = True) -> None:
    """Writes `config` as the config.json of `dst`, atomically (keys sorted, as every
    finished output has them)."""
    write_json_atomic(dst / CONFIG_NAME, config, sort_keys=sort_keys)


def copy_other_files(src: Path, dst: Path, shards: list[Path], skip: tuple[str, ...] = ()) -> list[str]:
    """Copies every file and folder of `src` but the shards, the index, config.json,
    hidden entries and the names in `skip` (files the output replaces) into `dst`;
    returns their names (folders with a trailing `/`)."""
    skip = {s.name for s in shards} | {INDEX_NAME, CONFIG_NAME, *skip}
    copied = []
    inside = dst.resolve()
    for entry in sorted(src.iterdir()):
        if entry.name in skip or entry.name.startswith("."):
            continue
        if entry.resolve() == inside or entry.resolve() in inside.parents:
            continue  # the output folder itself (or its parent) sits inside the input
        if entry.is_file():
            shutil.copy2(entry, dst / entry.name)
            copied.append(entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, dst / entry.name, dirs_exist_ok=True)
            copied.append(entry.name + "/")
    return copied
