"""Compression on a real multi-node Ray cluster (Ray's own test cluster: a head and two
worker nodes of one CPU, each a set of processes on this machine) must write exactly
the bytes one process writes: shard-parallel RTN, and calibrated GPTQ (act order,
g_idx), SparseGPT 2:4 + W4A16 and SpQR, also with a worker killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from ctcodec import compress_checkpoint  # noqa: E402
from ctcodec.calibrate import compress_calibrated  # noqa: E402
from ctcodec.cluster import parse  # noqa: E402
from ctcodec.calibrate.engine import BATCHES_PER_BLOCK, partitions  # noqa: E402
from ctcodec.errors import CodecError  # noqa: E402
from ctcodec.spqr_format import SpqrParams  # noqa: E402

from model_folders import sharded_model  # noqa: E402
from tiny_models import calib_file  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A head that schedules no work and two one-CPU worker nodes."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_folders(a: Path, b: Path) -> None:
    fa, fb = folder_bytes(a), folder_bytes(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], name


def test_cluster_argument_is_parsed_and_refused_clearly():
    assert parse("local:2") == ("local", 2)
    assert parse("auto") == ("auto", None)
    assert parse("ray://head:10001") == ("ray://head:10001", None)
    assert parse("127.0.0.1:6379") == ("127.0.0.1:6379", None)
    for bad in ("local:0", "local:x", "nowhere", ""):
        with pytest.raises(CodecError, match="cluster must be"):
            parse(bad)


def test_partitions_are_whole_contiguous_blocks():
    for batches in range(1, 17):
        blocks = -(-batches // BATCHES_PER_BLOCK)
        for parts in range(1, 5):
            p = partitions(batches, parts)
            assert [b for s in p for b in range(batches)[s]] == list(range(batches))
            assert len(p) == min(blocks, parts)
            assert all(s.start % BATCHES_PER_BLOCK == 0 and s.stop > s.start for s in p)


def test_shard_parallel_rtn_is_byte_identical(cluster, tmp_path):
    src = sharded_model(tmp_path / "src")
    one = compress_checkpoint(src, tmp_path / "one", scheme="W4A16", group_size=32)
    many = compress_checkpoint(src, tmp_path / "many", scheme="W4A16", group_size=32, cluster=cluster.address)
    assert many["shards"] == one["shards"] > 1
    assert_same_folders(tmp_path / "one", tmp_path / "many")


CALIBRATED = {
    "gptq-actorder-group": dict(algorithm="gptq", scheme="W4A16_ASYM", group_size=32, act_order=True,
                                actorder="group"),
    "sparsegpt-2of4-w4a16": dict(algorithm="sparsegpt", sparsity="2:4", scheme="W4A16", group_size=32),
    "spqr": dict(algorithm="spqr", spqr_params=SpqrParams(bits=3, beta1=16, beta2=16)),
    # Workers rebuild the rotated folder's online R4 from its config.json.
    "gptq-rotated-online-r4": dict(algorithm="gptq", scheme="W4A16", group_size=32, rotate="hadamard",
                                   online_rotation=True, observer="mse"),
}


@pytest.mark.parametrize("name", sorted(CALIBRATED))
def test_calibrated_is_byte_identical(cluster, tiny, tmp_path, name):
    kw = dict(CALIBRATED[name], calib=calib_file(tmp_path), nsamples=8, seqlen=32)
    compress_calibrated(tiny, tmp_path / "one", **kw)
    s = compress_calibrated(tiny, tmp_path / "many", cluster=cluster.address, **kw)
    assert set(s["phases"]) == {"forward", "reduce", "solve", "propagate"}
    assert_same_folders(tmp_path / "one", tmp_path / "many")


def _worker_processes() -> dict[int, str]:
    """Calibration worker processes running a step (Ray titles them `ray::_statistics`,
    `ray::_propagate`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if args.startswith(("ray::_statistics", "ray::_propagate")):
            found[int(entry.name)] = args.strip()
    return found


def _kill_a_worker_mid_run(killed: list, stop: threading.Event):
    """SIGKILLs the first worker process seen running a layer's step."""
    while not stop.is_set():
        procs = _worker_processes()
        if procs:
            pid = min(procs)
            os.kill(pid, signal.SIGKILL)
            killed.append(procs[pid])
            return
        time.sleep(0.005)


def test_a_worker_killed_mid_layer_costs_a_retry_not_the_job(cluster, tiny, tmp_path):
    # Enough batches that a layer's forward runs long enough to be caught in it.
    kw = dict(CALIBRATED["gptq-actorder-group"], calib=calib_file(tmp_path), nsamples=64, seqlen=64)
    compress_calibrated(tiny, tmp_path / "one", **kw)
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_worker_mid_run, args=(killed, stop))
    killer.start()
    try:
        compress_calibrated(tiny, tmp_path / "many", cluster=cluster.address, **kw)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught running a layer"
    assert_same_folders(tmp_path / "one", tmp_path / "many")


def test_cli_gptq_on_a_local_cluster_matches_one_process(tiny, tmp_path):
    base = [sys.executable, "-m", "ctcodec.cli", "compress", str(tiny)]
    opts = ["--scheme", "W4A16", "--group-size", "32", "--algorithm", "gptq", "--calib", calib_file(tmp_path), "--nsamples", "8",
            "--seqlen", "32", "-q"]
    for out, extra in (("one", []), ("many", ["--cluster", "local:2"])):
        proc = subprocess.run(base + [str(tmp_path / out)] + opts + extra, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert_same_folders(tmp_path / "one", tmp_path / "many")
