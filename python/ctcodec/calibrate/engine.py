"""The layer-by-layer calibration pass: inputs of the first layer are captured once,
then each layer is loaded, its linear layers' input Hessians are accumulated over the
calibration set, each linear layer is replaced by its compressed-then-decoded weight,
and the layer is re-run so the next one sees the compressed model's activations."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

import torch

from .hessian import BatchStatistics, SharedInputs, reduce_statistics
from .layerwise import LayerwiseModel


class _Captured(Exception):
    pass


class _Catcher(torch.nn.Module):
    def __init__(self, store: list, attention_type: str | None):
        super().__init__()
        self.store = store
        if attention_type is not None:  # models that pick each layer's mask by its type read this
            self.attention_type = attention_type

    def forward(self, hidden, *args, **kwargs):
        self.store.append((hidden, args, kwargs))
        raise _Captured


def _to_f32(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.float()
    if isinstance(x, tuple):
        return tuple(_to_f32(v) for v in x)
    return x


def layer_types(lw: LayerwiseModel) -> list:
    """Each layer's attention type (full, sliding, ...) where the model mixes them."""
    types = getattr(lw.config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == lw.num_layers:
        return list(types)
    return [getattr(lw.template, "attention_type", None)] * lw.num_layers


def capture_inputs(lw: LayerwiseModel, windows: torch.Tensor, batch: int = 16,
                   attention_type: str | None = None) -> list:
    """(hidden, args, kwargs) of the first layer for batches of calibration windows
    (all windows have one length, so one batch's masks and positions serve all), with
    the attention mask a layer of `attention_type` gets."""
    store: list = []
    lw.layers.append(_Catcher(store, attention_type))
    saved = lw.outer.config.num_hidden_layers
    lw.outer.config.num_hidden_layers = 1  # some models slice their layer list by it
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch):
                ids = windows[start:start + batch]
                try:
                    lw.outer(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
                except _Captured:
                    pass
    finally:
        lw.outer.config.num_hidden_layers = saved
        del lw.layers[-1]
    return [(_to_f32(h), tuple(_to_f32(a) for a in args), {k: _to_f32(v) for k, v in kw.items()})
            for h, args, kw in store]


# Calibration batches whose Hessian statistics are summed together before the blocks
# are added up. Blocks are whole units of work: a cluster assigns each to one worker, so
# the sums, and every bit of H, do not depend on how many workers there are.
BATCHES_PER_BLOCK = 2


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread for one unit of work (a block's forward, a weight's
    solve): torch's parallel reductions and matmuls round differently with different
    thread counts, so every unit runs single-threaded wherever it runs (here, or on a
    cluster worker) and parallelism comes from running units side by side."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class Solver(Protocol):
    """Compresses one weight: `solve` is pure (it may run on another machine);
    `record` takes its payload back on the driver, in module order."""

    def solve(self, name: str, weight: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    def record(self, name: str, payload: Any) -> None: ...


def linears_of(layer: torch.nn.Module, prefix: str, names: list[str] | None = None) -> dict[str, torch.nn.Linear]:
    """The layer's Linear modules by checkpoint name (`prefix.<name>`), all or `names`."""
    found = {f"{prefix}.{n}": m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    return found if names is None else {n: found[n] for n in names}


def block_statistics(layer, linears: dict, batches: list) -> dict[str, list[BatchStatistics]]:
    """Per block of `BATCHES_PER_BLOCK` batches (in order), each linear layer's Σ x xᵀ.
    Call it under `one_thread()`."""
    out: dict[str, list[BatchStatistics]] = {n: [] for n in linears}
    shared = SharedInputs()
    for start in range(0, len(batches), BATCHES_PER_BLOCK):
        block = {n: BatchStatistics(m.in_features) for n, m in linears.items()}
        hooks = [m.register_forward_hook(lambda _m, inp, _out, s=block[n]: s.add(inp[0], shared.gram(inp[0])))
                 for n, m in linears.items()]
        try:
            with torch.no_grad():
                for h, args, kw in batches[start:start + BATCHES_PER_BLOCK]:
                    layer(h, *args, **kw)
        finally:
            for hook in hooks:
                hook.remove()
            shared.clear()
        for n in linears:
            out[n].append(block[n])
    return out


def propagate(layer, batches: list) -> list[torch.Tensor]:
    """The layer's outputs: the next layer's hidden states, batch by batch."""
    outs = []
    with torch.no_grad():
        for h, args, kw in batches:
            out = layer(h, *args, **kw)
            outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


def solve_order(jobs: list) -> list[int]:
    """Jobs (name, weight [rows, columns], H) most costly first, so that side-by-side
    solvers finish together: a column-by-column solve costs about columns · (columns +
    rows) (a loop step per column, each touching the rest of the row block and a row of
    the factor)."""
    def cost(k: int) -> int:
        rows, columns = jobs[k][1].shape
        return columns * (columns + rows)

    return sorted(range(len(jobs)), key=lambda k: -cost(k))


def set_weights(linears: dict, decoded: dict[str, torch.Tensor]) -> None:
    for name, w in decoded.items():
        linears[name].weight.data = w


def partitions(n_batches: int, parts: int) -> list[slice]:
    """Contiguous runs of whole blocks, as even as they come."""
    blocks = -(-n_batches // BATCHES_PER_BLOCK)
    parts = max(1, min(parts, blocks))
    cuts = [blocks * k // parts for k in range(parts + 1)]
    return [slice(cuts[k] * BATCHES_PER_BLOCK, min(cuts[k + 1] * BATCHES_PER_BLOCK, n_batches))
            for k in range(parts)]


class InProcess:
    """Runs every step in this process, partitions and solves side by side on threads
    (one torch thread each): the same units of work, with the same bits, as a cluster."""

    def __init__(self, lw: LayerwiseModel, captured: dict, types: list, threads: int | None = None):
        self.lw, self.captured, self.types = lw, captured, types
        self.hidden = [h for h, _a, _k in captured[types[0]]]
        threads = threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.parts = partitions(len(self.hidden), threads)

    def _batches(self, i: int) -> list:
        return [(h, args, kw) for h, (_h, args, kw) in zip(self.hidden, self.captured[self.types[i]])]

    def statistics(self, i: int, layer, names: list[str]) -> dict[str, list[BatchStatistics]]:
        batches = self._batches(i)

        def part(p: slice):
            own = copy.deepcopy(layer)  # hooks of one partition must not see another's batches
            with one_thread():
                return block_statistics(own, linears_of(own, f"{self.lw.prefix}.{i}", names), batches[p])

        merged: dict[str, list[BatchStatistics]] = {n: [] for n in names}
        for stats in self.pool.map(part, self.parts):  # partitions in block order
            for n in names:
                merged[n].extend(stats[n])
        return merged

    def solve(self, jobs: list, solver: Solver) -> list:
        def one(job):
            with one_thread():
                return solver.solve(*job)

        futures = {k: self.pool.submit(one, jobs[k]) for k in solve_order(jobs)}
        return [futures[k].result() for k in range(len(jobs))]

    def advance(self, i: int, layer, decoded: dict[str, torch.Tensor]) -> None:
        set_weights(linears_of(layer, f"{self.lw.prefix}.{i}"), decoded)
        batches = self._batches(i)

        def part(p: slice):
            with one_thread():
                return propagate(layer, batches[p])

        self.hidden = [h for out in self.pool.map(part, self.parts) for h in out]

    def close(self) -> None:
        self.pool.shutdown()


def calibrate(lw: LayerwiseModel, windows: torch.Tensor, select: Callable[[str, tuple], bool], solver: Solver,
              log: Callable[[str], None] = lambda s: None, runner_factory=None) -> dict[str, float]:
    """Calibrates layer by layer; `runner_factory(lw, captured, types)` runs the data
    and solve steps (here by default, or on a cluster). Returns seconds per phase."""
    types = layer_types(lw)
    # The masks and positions each kind of layer gets; the hidden states are the same.
    captured = {t: capture_inputs(lw, windows, attention_type=t) for t in dict.fromkeys(types)}
    runner = (runner_factory or InProcess)(lw, captured, types)
    phases = {"forward": 0.0, "reduce": 0.0, "solve": 0.0, "propagate": 0.0}
    try:
        for i in range(lw.num_layers):
            t0 = time.perf_counter()
            layer = lw.load_layer(i).float()
            linears = {n: m for n, m in linears_of(layer, f"{lw.prefix}.{i}").items()
                       if select(n, tuple(m.weight.shape))}
            t = time.perf_counter()
            blocks = runner.statistics(i, layer, list(linears))
            phases["forward"] += time.perf_counter() - t
            t = time.perf_counter()
            jobs = []
            for name, mod in linears.items():
                H = reduce_statistics(mod.in_features, blocks[name])
                if H is None:  # e.g. an MoE expert no calibration token was routed to
                    log(f"{name}: no calibration input reached it; solved with an identity Hessian")
                    H = torch.eye(mod.in_features)
                jobs.append((name, mod.weight.data, H))
            del blocks
            phases["reduce"] += time.perf_counter() - t
            t = time.perf_counter()
            results = runner.solve(jobs, solver)
            decoded = {}
            for (name, _w, _h), (weight, payload) in zip(jobs, results):
                solver.record(name, payload)
                decoded[name] = weight.to(lw.dtype).float()
            del jobs, results
            phases["solve"] += time.perf_counter() - t
            t = time.perf_counter()
            runner.advance(i, layer, decoded)
            phases["propagate"] += time.perf_counter() - t
            del layer
            log(f"layer {i + 1}/{lw.num_layers}: {len(linears)} linear layers in {time.perf_counter() - t0:.1f} s")
    finally:
        runner.close()
    return phases
