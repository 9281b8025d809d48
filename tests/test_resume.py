"""Crash safety: a real `ctcodec compress` / `decompress` SIGKILLed at chosen points (a
sitecustomize in the child arms the kill: during a shard, between shards, while the index
is written) leaves no shard under a final name half-written, and the same command run
again resumes: finished shards are verified and kept, and the result is byte-identical to
an uninterrupted run, with no temporary file left."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ctcodec
from model_folders import SHARDS, sharded_model as _sharded_model

CTCODEC = Path(sys.executable).parent / "ctcodec"

# Arms a SIGKILL in the child: CTCODEC_KILL=during:N (once a temporary file exists while
# shard N is written), after:N (once N shards are recorded), index (when the index's
# temporary file is written).
_KILLER = r'''
import json, os, signal, sys, threading, time
from pathlib import Path
where = os.environ.get("CTCODEC_KILL", "")
if where:
    import ctcodec.model_folder.run as rf, ctcodec.model_folder.files as files, ctcodec.model_folder.output as output
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if where.startswith("after:"):
        n = int(where.split(":")[1])
        record = rf.RunFolder.record
        def counting(self, name, stats):
            record(self, name, stats)
            if len(self.shards) >= n:
                die()
        rf.RunFolder.record = counting
    elif where.startswith("during:"):
        n = int(where.split(":")[1])
        def watch():
            dst = Path(sys.argv[3])
            while True:
                done = 0
                manifest = dst / rf.MANIFEST
                try:
                    done = len(json.loads(manifest.read_text())["shards"])
                except Exception:
                    pass
                if done == n - 1 and list(dst.glob(".ctcodec-*.tmp")):
                    die()
                time.sleep(0.0002)
        threading.Thread(target=watch, daemon=True).start()
    elif where == "index":
        write = files.write_json_atomic
        def killing(path, data, sort_keys=False):
            if path.name == files.INDEX_NAME:
                tmp = path.with_name(f".{path.name}.ctcodec-tmp")
                tmp.write_text("{half")
                die()
            return write(path, data, sort_keys)
        output.write_json_atomic = killing
'''


def _run(*args, kill: str | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if kill:
        (tmp / "site").mkdir(exist_ok=True)
        (tmp / "site" / "sitecustomize.py").write_text(_KILLER)
        env.update(PYTHONPATH=str(tmp / "site"), CTCODEC_KILL=kill)
    return subprocess.run([str(CTCODEC), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _sharded_model(tmp_path_factory.mktemp("resume") / "dense")


COMMANDS = {
    "compress-sparse": ["compress", "{src}", "{out}", "-q"],
    "compress-w4a16": ["compress", "{src}", "{out}", "--scheme", "W4A16", "--group-size", "128", "-q"],
}


@pytest.fixture(scope="module")
def clean(model, tmp_path_factory) -> dict[str, Path]:
    """Each command run once without interruption."""
    root = tmp_path_factory.mktemp("clean")
    out = {}
    for name, cmd in COMMANDS.items():
        out[name] = root / name
        r = _run(*[a.format(src=model, out=out[name]) for a in cmd])
        assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("kill, kept", [("during:1", 0), ("after:1", 1), ("during:3", 2), ("after:3", 3),
                                         ("index", SHARDS)])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_sigkill_then_rerun_resumes_byte_identical(command, kill, kept, model, clean, tmp_path):
    out = tmp_path / "out"
    args = [a.format(src=model, out=out) for a in COMMANDS[command]]
    r = _run(*args, kill=kill, tmp=tmp_path)
    assert r.returncode == -9, (r.returncode, r.stderr)
    # Killed: an unfinished folder, which readers refuse; no shard half-written under its name.
    manifest = json.loads((out / ".ctcodec-in-progress.json").read_text())
    assert len(manifest["shards"]) == kept
    finished = {p.name for p in out.glob("model-*.safetensors")}
    assert finished == set(manifest["shards"])
    with pytest.raises(ctcodec.CodecError, match="unfinished ctcodec output"):
        list(ctcodec.decompress_file(out))

    r = _run(*args)
    assert r.returncode == 0, r.stderr
    assert f"resumed {kept} of {SHARDS} shards" in r.stdout if kept else "resumed" not in r.stdout, r.stdout
    assert _files(out) == _files(clean[command])  # no manifest, lock or temporary file either


def test_a_finished_shard_changed_after_the_kill_is_redone(model, clean, tmp_path):
    out = tmp_path / "out"
    args = [a.format(src=model, out=out) for a in COMMANDS["compress-w4a16"]]
    assert _run(*args, kill="after:2", tmp=tmp_path).returncode == -9
    first = sorted(out.glob("model-*.safetensors"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # same size, same header, different bytes: the checksum catches it
    first.write_bytes(bytes(data))
    r = _run(*args)
    assert r.returncode == 0 and "resumed 1 of 4 shards" in r.stdout, r.stdout
    assert _files(out) == _files(clean["compress-w4a16"])


def test_a_different_command_after_a_kill_starts_over(model, clean, tmp_path):
    out = tmp_path / "out"
    w4 = [a.format(src=model, out=out) for a in COMMANDS["compress-w4a16"]]
    assert _run(*w4, kill="after:2", tmp=tmp_path).returncode == -9
    sparse = [a.format(src=model, out=out) for a in COMMANDS["compress-sparse"]]
    r = _run(*sparse)
    assert r.returncode == 0 and "resumed" not in r.stdout, r.stdout
    assert _files(out) == _files(clean["compress-sparse"])


def test_overwrite_after_a_kill_starts_over(model, clean, tmp_path):
    out = tmp_path / "out"
    args = [a.format(src=model, out=out) for a in COMMANDS["compress-sparse"]]
    assert _run(*args, kill="after:2", tmp=tmp_path).returncode == -9
    r = _run(*args, "--overwrite")
    assert r.returncode == 0 and "resumed" not in r.stdout, r.stdout
    assert _files(out) == _files(clean["compress-sparse"])


def test_decompress_resumes_too(model, clean, tmp_path):
    out = tmp_path / "dense"
    assert _run("decompress", clean["compress-w4a16"], tmp_path / "want", "-q").returncode == 0
    assert _run("decompress", clean["compress-w4a16"], out, "-q", kill="after:2", tmp=tmp_path).returncode == -9
    r = _run("decompress", clean["compress-w4a16"], out, "-q")
    assert r.returncode == 0 and "resumed 2 of 4 shards" in r.stdout, r.stdout
    assert _files(out) == _files(tmp_path / "want")


def test_a_second_run_into_the_same_folder_is_refused_at_once(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".ctcodec.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a live run holds it
    os.write(fd, b"4242")
    try:
        r = _run("compress", model, out, "-q")
    finally:
        os.close(fd)
    assert r.returncode == 2
    assert re.search(r"another ctcodec run \(pid 4242\) is writing into this folder", r.stderr), r.stderr
    assert sorted(p.name for p in out.iterdir()) == [".ctcodec.lock"]


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT, SIGTERM
def test_sigint_and_sigterm_leave_finished_shards_and_no_temporary_file(signum, model, clean, tmp_path):
    import time

    out = tmp_path / "out"
    args = [a.format(src=model, out=out) for a in COMMANDS["compress-w4a16"]]
    proc = subprocess.Popen([str(CTCODEC), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads((out / ".ctcodec-in-progress.json").read_text())["shards"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.001)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Traceback" not in err
    assert not list(out.glob(".ctcodec-*.tmp")) and not list(out.glob(".*.ctcodec-tmp"))
    assert (out / ".ctcodec-in-progress.json").is_file() and not (out / ".ctcodec.lock").exists()
    r = _run(*args)
    assert r.returncode == 0 and "resumed" in r.stdout, r.stdout
    assert _files(out) == _files(clean["compress-w4a16"])
