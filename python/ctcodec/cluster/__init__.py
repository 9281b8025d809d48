"""Compression across the nodes of a Ray cluster (`cluster=` / `--cluster`).

- `"auto"`: the cluster this machine is part of (`ray start` ran here);
- `"ray://HOST:PORT"`: a remote cluster through Ray Client;
- `"local:N"`: a Ray instance started here with N worker CPUs;
- `"HOST:PORT"`: a cluster's head (GCS) address, as `ray start --head` prints it.

Shard-parallel compression (`shards.run_jobs`) runs each input shard as a task that
writes its output shard through the same atomic writer as one process; calibrated
compression (`calibration.RayRunner`) partitions the calibration batches over workers
(a task per partition and step) and solves the weights as tasks. Workers read the input
folder and write the output folder by path: the nodes must share them (a shared
filesystem).
"""

from __future__ import annotations

import contextlib
import os

from ..errors import CodecError
from ..extras import require


def parse(cluster: str) -> tuple[str, int | None]:
    """`(address, cpus)` for ray.init: cpus only for a local instance."""
    c = str(cluster).strip()
    if c == "auto" or c.startswith("ray://"):
        return c, None
    if c.startswith("local:"):
        try:
            n = int(c[len("local:"):])
        except ValueError:
            n = 0
        if n >= 1:
            return "local", n
    else:
        host, _, port = c.rpartition(":")
        if host and port.isdigit():
            return c, None
    raise CodecError(f"cluster must be auto, ray://HOST:PORT, HOST:PORT or local:N (N >= 1), not {cluster!r}")


@contextlib.contextmanager
def connected(cluster: str):
    """Ray, connected to `cluster` for the duration (an existing connection is reused
    and left open)."""
    address, cpus = parse(cluster)
    require("cluster", f"cluster={cluster!r}", "ray")
    import ray

    if ray.is_initialized():
        yield ray
        return
    # Workers import ctcodec from the driver's environment; a PYTHONPATH goes with them.
    pythonpath = os.environ.get("PYTHONPATH")
    kwargs = dict(include_dashboard=False, log_to_driver=False,
                  runtime_env={"env_vars": {"PYTHONPATH": pythonpath}} if pythonpath else None)
    if address == "local":
        # "local" starts a new instance even where another runs on this machine.
        ray.init(address="local", num_cpus=cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def workers(ray) -> int:
    """How many one-CPU workers the cluster can run at once."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def calibration_runner(cluster: str, folder):
    """A runner factory for `engine.calibrate` that runs on `cluster`."""
    from .calibration import RayRunner

    return lambda lw, captured, types: RayRunner(cluster, folder, lw, captured, types)
