"""The output folder of a run, made crash-safe and resumable.

While a run writes, the folder holds `.ctcodec.lock` (flock'ed by the writing process, so
a second run into it is refused at once and a dead writer's lock is free) and the
manifest `.ctcodec-in-progress.json`: what the run is (a key over its inputs and
arguments) and, for each shard renamed into place, its size, a digest of its header,
a CRC-32 of its bytes and its statistics. Readers refuse a folder with a manifest: it is
half a checkpoint. Index and config.json are written last, then the manifest goes.

Run the same command again after a kill and the finished shards are verified against
the manifest and kept, the rest redone, and ctcodec's stale temporary files removed:
the result is byte-identical to an uninterrupted run. `overwrite` starts over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import CodecError
from .files import CONFIG_NAME, INDEX_NAME, MANIFEST, write_json_atomic

LOCK = ".ctcodec.lock"
# Temporary files the native writer (and write_json_atomic) create beside their targets.
TEMP_PATTERNS = (".ctcodec-*.tmp", ".*.ctcodec-tmp")

_held: dict[Path, "RunFolder"] = {}  # folders this process is writing (nested calls share them)


class OutputNotEmpty(CodecError):
    """The output folder holds files and overwriting was not asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        super().__init__(f"{folder}: output folder is not empty (pass overwrite=True)")


def _checksum(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _header_digest(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        return hashlib.sha256(head + f.read(min(size, 100 << 20))).hexdigest()


def shard_record(path: Path, stats: Any) -> dict[str, Any]:
    return {"size": path.stat().st_size, "header_sha256": _header_digest(path), "crc32": _checksum(path),
            "stats": stats}


class RunFolder:
    """A destination folder being written by this process (see the module doc)."""

    def __init__(self, dst: Path, key: str | None, created: bool):
        self.dst, self.key, self.created = dst, key, created
        self.shards: dict[str, dict[str, Any]] = {}
        self.resumed: list[str] = []
        self._lock_fd: int | None = None

    # --- manifest -------------------------------------------------------------------
    def _save(self) -> None:
        write_json_atomic(self.dst / MANIFEST, {"version": 1, "key": self.key, "shards": self.shards})

    def done(self, shard_name: str) -> Any | None:
        """The recorded statistics of a shard an earlier run finished, if the file on disk
        is still exactly what it recorded; else None (the shard is redone)."""
        record = self.shards.get(shard_name)
        path = self.dst / shard_name
        if record is None or not path.is_file():
            return None
        if (path.stat().st_size != record["size"] or _header_digest(path) != record["header_sha256"]
                or _checksum(path) != record["crc32"]):
            del self.shards[shard_name]
            path.unlink()
            return None
        self.resumed.append(shard_name)
        return record["stats"]

    def record(self, shard_name: str, stats: Any) -> None:
        self.shards[shard_name] = shard_record(self.dst / shard_name, stats)
        self._save()

    # --- lifecycle ------------------------------------------------------------------
    def _lock(self) -> None:
        fd = os.open(self.dst / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = (self.dst / LOCK).read_text().strip() or "another process"
            raise CodecError(f"{self.dst}: another ctcodec run (pid {owner}) is writing into this folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            (self.dst / LOCK).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_temp_files(self) -> None:
        # Only ours, and only while we hold the lock: no live ctcodec writes here.
        for pattern in TEMP_PATTERNS:
            for tmp in self.dst.glob(pattern):
                if tmp.is_file():
                    tmp.unlink()

    def _clear_checkpoint_files(self) -> None:
        for old in [*self.dst.glob("*.safetensors"), self.dst / INDEX_NAME, self.dst / CONFIG_NAME,
                    self.dst / MANIFEST]:
            if old.is_file():
                old.unlink()

    def open(self, overwrite: bool) -> None:
        self._lock()
        self._remove_temp_files()
        manifest = self.dst / MANIFEST
        earlier = None
        if manifest.is_file():
            try:
                earlier = json.loads(manifest.read_text())
            except (OSError, ValueError):
                earlier = None
        resumable = earlier is not None and self.key is not None and earlier.get("key") == self.key
        if overwrite or (earlier is not None and not resumable):
            # Starting over: an explicit overwrite, or an interrupted run of another command
            # (a calibrated run, say, which cannot resume) whose files are ours to replace.
            self._clear_checkpoint_files()
        elif resumable:
            self.shards = dict(earlier.get("shards") or {})
        elif any(p.name != LOCK for p in self.dst.iterdir()):
            raise OutputNotEmpty(self.dst)
        self._save()

    def finish(self) -> None:
        (self.dst / MANIFEST).unlink(missing_ok=True)
        self._unlock()

    def abandon(self, interrupted: bool) -> None:
        """After a failure. An interruption (Ctrl-C, a signal turned into an exception)
        keeps finished shards and the manifest for a rerun; an error in the input removes
        what this run wrote (and the folder, when the run created it)."""
        self._remove_temp_files()
        if not interrupted:
            for name in self.shards:
                (self.dst / name).unlink(missing_ok=True)
            for name in (MANIFEST, INDEX_NAME):
                (self.dst / name).unlink(missing_ok=True)
        self._unlock()
        if not interrupted and self.created:
            shutil.rmtree(self.dst, ignore_errors=True)


@contextmanager
def run_folder(src: Path, dst: Path, overwrite: bool, key: str | None = None) -> Iterator[RunFolder]:
    """Opens `dst` for a run reading `src`; `key` identifies the run for resuming (None:
    the run cannot resume, and its rerun starts over)."""
    if dst.exists() and src.resolve() == dst.resolve():
        raise CodecError(f"{dst}: output folder is the input folder; inputs are never modified")
    if dst.exists() and not dst.is_dir():
        raise CodecError(f"{dst}: output path is a file, not a folder")
    resolved = dst.resolve() if dst.exists() else None
    if resolved is not None and resolved in _held:
        yield _held[resolved]  # a nested call (calibrated SparseGPT writes through compress_checkpoint)
        return
    created = not dst.exists()
    dst.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(dst, key, created)
    try:
        folder.open(overwrite)
    except BaseException:
        folder._unlock()
        if created:
            shutil.rmtree(dst, ignore_errors=True)
        raise
    _held[dst.resolve()] = folder
    try:
        yield folder
    except BaseException as e:
        folder.abandon(interrupted=not isinstance(e, (CodecError, OSError, ValueError, TypeError)))
        raise
    else:
        folder.finish()
    finally:
        _held.pop(dst.resolve(), None)


def run_key(*parts: Any) -> str:
    """A digest of what a run reads and how: inputs (path, size, mtime) and arguments."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def input_fingerprint(paths) -> list:
    return [[os.fspath(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
