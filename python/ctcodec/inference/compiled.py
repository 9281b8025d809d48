"""Compiled decoding: transformers' recipe for a compiled `generate`, applied to a model
whose compressed layers are custom ops (ops.py), so the forward is one graph."""

from __future__ import annotations

import torch


def compile_for_decoding(model, *, mode: str | None = None, backend: str = "inductor"):
    """Sets a static KV cache (fixed shapes from step to step) and compiles the forward
    whole (`fullgraph=True`: a graph break would be an error, not a silent slowdown), and
    turns off transformers' own compile of decode steps, so this one is what runs.
    `mode` defaults to "reduce-overhead" on CUDA, which replays each decode step as one
    CUDA graph, and to "default" elsewhere. The first calls compile, tune the kernels
    and capture; time the ones after. Returns the model, changed in place."""
    device = next(model.parameters()).device
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.cache_implementation = "static"
        # transformers (4.5x) would otherwise compile each CUDA decode step again itself
        # (inductor, reduce-overhead, graph breaks allowed), over this compile.
        model.generation_config.disable_compile = True
    options = {}
    if backend == "inductor":  # modes are inductor's
        options["mode"] = mode or ("reduce-overhead" if device.type == "cuda" else "default")
    elif mode is not None:
        raise ValueError(f"mode {mode!r} is for the inductor backend, not {backend!r}")
    if device.type == "cuda":
        _make_split_counters(device)
    model.forward = torch.compile(model.forward, fullgraph=True, backend=backend, **options)
    return model


def _make_split_counters(device) -> None:
    # The kernels' split-K counters must exist before CUDA graphs warm up and capture
    # (their memory pool would own them otherwise); weights prepared elsewhere made them.
    try:
        from ctcodec_kernels.split_sum import semaphores
    except ImportError:  # no kernels installed: nothing splits
        return
    semaphores(device)
