"""The files of a model folder: their names, the list of shards, JSON read and atomic
write, and finding config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import CodecError

INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
# Present while a ctcodec run writes the folder (see run.py): half a checkpoint.
MANIFEST = ".ctcodec-in-progress.json"


def shard_paths(path: str | os.PathLike) -> list[Path]:
    """The safetensors files of a file or model folder, in index order when there is one."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: does not exist")
    refuse_incomplete(p)
    index = p / INDEX_NAME
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CodecError(f"{index}: has no weight_map")
        names = list(dict.fromkeys(weight_map.values()))
        missing = [n for n in names if not (p / n).is_file()]
        if missing:
            raise CodecError(f"{index}: names shard {missing[0]!r}, which is not in {p}")
        return [p / n for n in names]
    shards = sorted(p.glob("*.safetensors"))
    if not shards:
        raise CodecError(f"{p}: holds no .safetensors file")
    return shards


def refuse_incomplete(folder: Path) -> None:
    """Readers call this: a folder with a manifest is an interrupted run's output."""
    if (folder / MANIFEST).is_file():
        raise CodecError(f"{folder}: is an unfinished ctcodec output (the run that wrote it stopped before the "
                         "end); run the same command again to finish it, or with --overwrite to start over")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path` (CodecError when it is not valid JSON or not an object)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CodecError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CodecError(f"{path}: expected a JSON object")
    return data


def write_json_atomic(path: Path, data: dict[str, Any], sort_keys: bool = False) -> None:
    """Writes `data` (indented, newline-terminated) to a temporary file beside `path`,
    then renames it into place: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.ctcodec-tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=sort_keys)
        f.write("\n")
    os.replace(tmp, path)


def find_config(path: str | os.PathLike) -> Path | None:
    """config.json of a model folder, or next to a single file."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    cfg = folder / CONFIG_NAME
    return cfg if cfg.is_file() else None
