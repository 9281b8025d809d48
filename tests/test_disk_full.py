"""Disk full in the middle of a run, on a real small filesystem (a tmpfs mounted for the
test; skipped where mounting is not allowed): a CodecError naming the file, no shard
half-written under a final name, no temporary file, the output folder gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ctcodec
from model_folders import sharded_model

CTCODEC = Path(sys.executable).parent / "ctcodec"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", [["compress", "-q"], ["compress", "--scheme", "W8A16", "--group-size", "128", "-q"]])
def test_disk_full_is_a_codec_error_and_leaves_nothing(command, small_disk, tmp_path):
    src = sharded_model(tmp_path / "dense")  # ~24 MiB of output: the 10 MiB disk fills in shard 2
    out = small_disk / "out"
    r = subprocess.run([str(CTCODEC), command[0], str(src), str(out), *command[1:]], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert str(small_disk) in r.stderr and ".safetensors" in r.stderr, r.stderr
    assert "space" in r.stderr.lower(), r.stderr
    assert not out.exists()
    assert list(small_disk.iterdir()) == []


def test_disk_full_through_the_api_removes_a_prepared_folder_s_files_only(small_disk, tmp_path):
    src = sharded_model(tmp_path / "dense")
    out = small_disk / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ctcodec.CodecError, match="model-0000"):
        ctcodec.compress_checkpoint(src, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
