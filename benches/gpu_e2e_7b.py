"""End to end at the size people serve: a Llama-7B-shaped model with random weights,
dense bf16 against W4A16 (ctcodec's Triton kernels) against 3-bit SpQR, on one GPU.

    python benches/gpu_e2e_7b.py --json OUT.json [--layers 32] [--batches 1 16]

For each variant, all built on the GPU with no checkpoint to write or read:
- decode tokens/s at each batch size. "eager" is generate with a dynamic cache.
  "graphs" is generate with a static cache and the forward compiled with
  `ctcodec.compile_for_decoding(model, backend="cudagraphs")`. That backend replays each
  decode step as a CUDA graph (the custom ops inside) without inductor's code generation,
  whose minutes per variant a short GPU loan cannot spend. The rate is the difference of
  two generate lengths, so the prompt's prefill cancels out.
- prefill time of a 2,048-token prompt at batch 1 (eager; the tiled and SpQR paths).

The variants replace every Linear of the decoder layers in place, one after the other
(dense, then W4A16 g128, then SpQR 3-bit 16x16 with 1% outliers). Embeddings and the
LM head stay bf16, as in real checkpoints. Every layer gets its own random tensors, so
no weight is served from L2 because another layer used it.

`--device cpu --tiny` runs the same code on a small model on the CPU (eager only, the
exact fallbacks): a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

import ctcodec
from bench_kernels import GROUP, SPQR_PARAMS, _random_packed, spqr_stored

LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=1000, max_position_embeddings=4096)
W4A16 = {"num_bits": 4, "symmetric": True, "group_size": GROUP, "strategy": "group", "type": "int"}


def build_dense(shape: dict, layers: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, **shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # made in bf16 on the device: no fp32 copy of 7B
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _decoder_linears(model):
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, mod in list(parent.named_children()):
                if isinstance(mod, (torch.nn.Linear, ctcodec.CompressedLinear)):
                    yield parent, name, mod


def _device(mod) -> torch.device:
    """Where a Linear or a CompressedLinear (buffers only, without a bias) lives."""
    return next(itertools.chain(mod.parameters(), mod.buffers())).device


def to_w4a16(model, seed: int = 0) -> None:
    """Every decoder Linear becomes a CompressedLinear over random pack-quantized tensors."""
    for i, (parent, name, mod) in enumerate(list(_decoder_linears(model))):
        n, k = mod.out_features, mod.in_features
        words, scale, _ = _random_packed(n, k, 4, torch.bfloat16, _device(mod), seed + i)
        new = ctcodec.CompressedLinear(k, n, "pack", W4A16, False, torch.bfloat16)
        new.set_part("weight_packed", words)
        new.set_part("weight_scale", scale)
        new.prepare_kernels()  # the kernels' layout, as load_model does
        setattr(parent, name, new)


def to_spqr(model, seed: int = 1000) -> None:
    """Every decoder Linear becomes a CompressedLinear over random 3-bit SpQR tensors."""
    params = dict(SPQR_PARAMS)
    for i, (parent, name, mod) in enumerate(list(_decoder_linears(model))):
        n, k = mod.out_features, mod.in_features
        new = ctcodec.CompressedLinear(k, n, "spqr", params, False, torch.bfloat16)
        for part, tensor in spqr_stored(n, k, _device(mod), seed + i).items():
            new.set_part(part, tensor)
        new.prepare_kernels()  # the SpQR kernels' form on CUDA (nothing elsewhere)
        setattr(parent, name, new)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _generate_s(model, ids, new_tokens: int) -> float:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    _sync(ids.device)
    t0 = time.perf_counter()
    model.generate(ids, **kw)
    _sync(ids.device)
    return time.perf_counter() - t0


def decode_tokens_per_s(model, ids, short: int, long: int, repeats: int = 2) -> float:
    """Decode tokens per second (steps times the batch), from two generate lengths; NaN
    when the longer run was not the slower one (noise larger than the difference)."""
    with torch.no_grad():
        # Warm-up, both lengths twice: kernels tune, and with a static cache (its length
        # follows max_new_tokens) each length is its own graph; the third call still
        # recompiles once (seen on the CPU), the fourth does not.
        for steps in (short, long, short, long):
            _generate_s(model, ids, steps)
        a = statistics.median(_generate_s(model, ids, short) for _ in range(repeats))
        b = statistics.median(_generate_s(model, ids, long) for _ in range(repeats))
    return ids.shape[0] * (long - short) / (b - a) if b > a else float("nan")


def prefill_ms(model, ids, repeats: int = 3) -> float:
    with torch.no_grad():
        model(ids, use_cache=False)  # tunes the large-M paths
        times = []
        for _ in range(repeats):
            _sync(ids.device)
            t0 = time.perf_counter()
            model(ids, use_cache=False)
            _sync(ids.device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(model, variant: str, args, device: str, rows: list[dict]) -> None:
    """Appends the variant's rows to `rows`, writing --json after each (a timeout keeps them)."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)

    def done(row: dict) -> None:
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)

    for batch in args.batches:
        ids = torch.randint(0, vocab, (batch, args.prompt), generator=g).to(device)
        row = {"variant": variant, "batch": batch, "layers": args.layers, "shape": args.shape,
               "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
        model.generation_config.cache_implementation = None
        row["decode_tokens_per_s_eager"] = decode_tokens_per_s(model, ids, args.short, args.long)
        if args.compile_backend:
            torch._dynamo.reset()
            forward = model.forward
            ctcodec.compile_for_decoding(model, backend=args.compile_backend)
            key = "graphs" if args.compile_backend == "cudagraphs" else f"compiled_{args.compile_backend}"
            row[f"decode_tokens_per_s_{key}"] = decode_tokens_per_s(model, ids, args.short, args.long)
            model.forward = forward
            model.generation_config.cache_implementation = None
        done(row)
    ids = torch.randint(0, vocab, (1, args.prefill), generator=g).to(device)
    done({"variant": variant, "prefill_tokens": args.prefill, "prefill_ms": prefill_ms(model, ids)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a small model (checks the script; not a measurement)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens for the decode timing")
    p.add_argument("--short", type=int, default=16, help="new tokens of the shorter generate")
    p.add_argument("--long", type=int, default=80, help="new tokens of the longer generate")
    p.add_argument("--prefill", type=int, default=2048)
    p.add_argument("--variants", nargs="+", default=["dense", "w4a16", "spqr"])
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend of the static-cache decode (default: cudagraphs on CUDA, "
                        "none elsewhere; 'eager' on the CPU checks the compiled flow)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.compile_backend is None and torch.device(args.device).type == "cuda":
        args.compile_backend = "cudagraphs"
    args.shape = "tiny" if args.tiny else "llama-7b"
    model = build_dense(TINY if args.tiny else LLAMA_7B, args.layers, args.device)
    if args.compile_backend:
        # One static graph per shape (prefill, a decode step per cache length), not a
        # recompile to dynamic shapes on the third call.
        torch._dynamo.config.automatic_dynamic_shapes = False
    if args.compile_backend == "cudagraphs":
        # The static cache's in-place writes stay in the graph instead of becoming a copy of
        # the whole cache per step plus copies back outside it.
        torch._dynamo.config.cudagraph_backend_keep_input_mutation = True
    rows: list[dict] = []
    convert = {"dense": lambda m: None, "w4a16": to_w4a16, "spqr": to_spqr}
    for variant in ("dense", "w4a16", "spqr"):  # in this order: each replaces the last in place
        convert[variant](model)
        if variant in args.variants:
            measure(model, variant, args, args.device, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
