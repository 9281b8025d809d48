"""Calibrated compression on a Ray cluster, bit-identical to one process.

The calibration batches are cut into blocks (`engine.BATCHES_PER_BLOCK`) and the blocks
into contiguous partitions, one per worker. Per layer:

1. forward: a task per partition runs the layer over its batches and returns each
   block's Σ x xᵀ per linear layer; the driver adds the blocks up in block order (the
   same sums, in the same order, as one process);
2. solve: each weight is a task (most costly first, so the cluster stays busy), its result
   taken back in module order;
3. propagate: the decoded weights go to the object store once, and a task per
   partition runs its batches through the compressed layer.

The hidden states stay in the object store, owned by the driver, between layers, and
every step is a task that reads its layer from the checkpoint: a task whose worker
dies is run again on the same inputs, so a lost worker costs a retry of that step, not
the job.
"""

from __future__ import annotations

import torch

from ..calibrate import engine
from ..calibrate.layerwise import LayerwiseModel
from . import connected, workers


# A worker process keeps the model it last worked on (embeddings and config; each layer
# is read from the checkpoint when a task needs it), so later tasks skip the load.
_MODEL: dict[tuple[str, str], LayerwiseModel] = {}


def _model(folder: str, dtype: str) -> LayerwiseModel:
    if (folder, dtype) not in _MODEL:
        _MODEL.clear()
        _MODEL[(folder, dtype)] = LayerwiseModel(folder, getattr(torch, dtype))
    return _MODEL[(folder, dtype)]


def _statistics(folder: str, dtype: str, i: int, names: list[str], hidden: list, context: list) -> dict:
    """One partition's block statistics for layer i (a task: retried if its worker dies)."""
    lw = _model(folder, dtype)
    layer = lw.load_layer(i).float()
    batches = [(h, args, kw) for h, (args, kw) in zip(hidden, context)]
    with engine.one_thread():
        return engine.block_statistics(layer, engine.linears_of(layer, f"{lw.prefix}.{i}", names), batches)


def _propagate(folder: str, dtype: str, i: int, decoded: dict, hidden: list, context: list) -> list:
    """One partition's batches through layer i with its compressed weights (a task)."""
    lw = _model(folder, dtype)
    layer = lw.load_layer(i).float()
    engine.set_weights(engine.linears_of(layer, f"{lw.prefix}.{i}"), decoded)
    with engine.one_thread():
        return engine.propagate(layer, [(h, args, kw) for h, (args, kw) in zip(hidden, context)])


def _solve(solver, name, weight, H):
    with engine.one_thread():
        return solver.solve(name, weight, H)


class RayRunner:
    """`engine.calibrate`'s steps on a Ray cluster's workers."""

    def __init__(self, cluster: str, folder, lw: LayerwiseModel, captured: dict, types: list):
        self._connection = connected(cluster)
        self.ray = ray = self._connection.__enter__()
        try:
            self.types = types
            self.slices = engine.partitions(len(captured[types[0]]), workers(ray))
            self.where = (str(folder), str(lw.dtype).replace("torch.", ""))
            task = ray.remote(num_cpus=1, max_retries=-1)
            self.statistics_task, self.propagate_task = task(_statistics), task(_propagate)
            self.context = {t: [ray.put([(a, k) for _h, a, k in captured[t][s]]) for s in self.slices]
                            for t in dict.fromkeys(types)}
            first = captured[types[0]]
            self.hidden = [ray.put([h for h, _a, _k in first[s]]) for s in self.slices]
            self.solve_task = ray.remote(num_cpus=1, max_retries=-1)(_solve)
        except BaseException:
            self.close()
            raise

    def statistics(self, i: int, layer, names: list[str]) -> dict:
        ctx = self.context[self.types[i]]
        refs = [self.statistics_task.remote(*self.where, i, names, h, c) for h, c in zip(self.hidden, ctx)]
        merged: dict[str, list] = {n: [] for n in names}
        for part in self.ray.get(refs):  # partitions in block order
            for n in names:
                merged[n].extend(part[n])
        return merged

    def solve(self, jobs: list, solver) -> list:
        solver_ref = self.ray.put(solver)
        # Submitted most costly first (the cluster stays busy), collected in module order.
        refs: dict[int, object] = {}
        for k in engine.solve_order(jobs):
            name, weight, H = jobs[k]
            refs[k] = self.solve_task.remote(solver_ref, name, weight, H)
        return self.ray.get([refs[k] for k in range(len(jobs))])

    def advance(self, i: int, layer, decoded: dict) -> None:
        decoded_ref = self.ray.put(decoded)
        ctx = self.context[self.types[i]]
        self.hidden = [self.propagate_task.remote(*self.where, i, decoded_ref, h, c)
                       for h, c in zip(self.hidden, ctx)]
        self.ray.wait(self.hidden, num_returns=len(self.hidden))

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
