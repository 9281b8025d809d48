"""The layer-by-layer calibration pass: inputs of the first layer are captured once,
then each layer is loaded, its linear layers' input Hessians are accumulated over the
calibration set, each linear layer is replaced by its compressed-then-decoded weight,
and the layer is re-run so the next one sees the compressed model's activations."""

from __future__ import annotations

import time
from typing import Callable

import torch

from .hessian import HessianAccumulator
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


# solve(name, weight fp32 [m, n], H fp32 [n, n]) -> the weight a decoder will produce
Solver = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


def calibrate(lw: LayerwiseModel, windows: torch.Tensor, select: Callable[[str, tuple], bool], solve: Solver,
              log: Callable[[str], None] = lambda s: None) -> None:
    types = layer_types(lw)
    # The masks and positions each kind of layer gets; the hidden states are the same.
    captured = {t: capture_inputs(lw, windows, attention_type=t) for t in dict.fromkeys(types)}
    hidden = [h for h, _a, _k in captured[types[0]]]
    for i in range(lw.num_layers):
        inputs = [(h, args, kw) for h, (_h, args, kw) in zip(hidden, captured[types[i]])]
        t0 = time.perf_counter()
        layer = lw.load_layer(i).float()
        linears = {f"{lw.prefix}.{i}.{name}": mod for name, mod in layer.named_modules()
                   if isinstance(mod, torch.nn.Linear)}
        linears = {n: m for n, m in linears.items() if select(n, tuple(m.weight.shape))}
        hessians = {n: HessianAccumulator(m.in_features) for n, m in linears.items()}
        hooks = [m.register_forward_hook(lambda _m, inp, _out, h=hessians[n]: h.add(inp[0]))
                 for n, m in linears.items()]
        with torch.no_grad():
            for h, args, kw in inputs:
                layer(h, *args, **kw)
        for hook in hooks:
            hook.remove()
        for name, mod in linears.items():
            acc = hessians[name]
            if acc.count == 0:  # e.g. an MoE expert no calibration token was routed to
                log(f"{name}: no calibration input reached it; solved with an identity Hessian")
                acc.H = torch.eye(mod.in_features)
            decoded = solve(name, mod.weight.data, acc.H)
            mod.weight.data = decoded.to(lw.dtype).float()
        del hessians
        with torch.no_grad():
            outs = []
            for h, args, kw in inputs:
                out = layer(h, *args, **kw)
                outs.append(out[0] if isinstance(out, tuple) else out)
        hidden = outs
        del layer
        log(f"layer {i + 1}/{lw.num_layers}: {len(linears)} linear layers in {time.perf_counter() - t0:.1f} s")
