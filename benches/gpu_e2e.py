"""End to end on a GPU: models loaded with `ctcodec.load_model(..., device="cuda")` (the
Triton kernels) against the same checkpoints decoded on the CPU (exact fallback), and
decode speed (one token at a time) against the dense model on the GPU.

    python benches/gpu_e2e.py FOLDER [FOLDER ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import ctcodec


def logits(model, ids):
    with torch.no_grad():
        return model(ids.to(next(model.parameters()).device)).logits.float().cpu()


def tokens_per_second(model, ids, steps: int = 32) -> float:
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = model(ids.to(dev), use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(4):  # the kernels tune themselves on their first calls at M = 1
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def generate_tokens_per_second(model, ids, steps: int = 32) -> float:
    """Decode speed through `generate` with a static KV cache and the forward compiled
    whole with the "cudagraphs" backend: each step a CUDA graph replay of the same ops,
    without inductor's code generation (minutes a short GPU loan cannot spend). Warm-up
    runs trace, pick kernel configs and capture."""
    dev = next(model.parameters()).device
    torch._dynamo.config.cudagraph_backend_keep_input_mutation = True  # cache writes stay in the graph
    ctcodec.compile_for_decoding(model, backend="cudagraphs")
    kw = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0)
    ids = ids.to(dev)
    with torch.no_grad():
        for _ in range(3):
            model.generate(ids, **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def random_w4a16(config_path: str) -> str:
    """A model of the config's shape with random weights, compressed W4A16 g64 by ctcodec."""
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    tmp = tempfile.mkdtemp()
    config = AutoConfig.from_pretrained(config_path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(f"{tmp}/dense")
    ctcodec.compress_checkpoint(f"{tmp}/dense", f"{tmp}/w4a16", scheme="W4A16", group_size=64)
    return f"{tmp}/w4a16"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+")
    p.add_argument("--random-from-config", default=None,
                   help="also build a random bf16 model from this config.json and check it as W4A16 g64")
    p.add_argument("--json", default=None)
    p.add_argument("--compile", action="store_true",
                   help="also time decoding with each step a CUDA graph (static cache, fullgraph, cudagraphs backend)")
    args = p.parse_args()
    rows = []
    folders = list(args.folders)
    if args.random_from_config:
        folders.append(random_w4a16(args.random_from_config))
    for folder in folders:
        cpu = ctcodec.load_model(folder)
        gpu = ctcodec.load_model(folder, device="cuda")
        dense = ctcodec.load_model(folder)  # compressed modules swapped back for dense ones
        for name, mod in list(dense.named_modules()):
            if isinstance(mod, ctcodec.CompressedLinear):
                lin = torch.nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, dtype=mod.dtype)
                lin.weight.data = mod.dequantize()
                if mod.bias is not None:
                    lin.bias.data = mod.bias.data
                parent, _, leaf = name.rpartition(".")
                setattr(dense.get_submodule(parent) if parent else dense, leaf, lin)
        dense = dense.cuda()
        vocab = cpu.config.vocab_size
        ids = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(0))
        a, b, c = logits(cpu, ids), logits(gpu, ids), logits(dense, ids)
        scale = a.abs().max().item()
        row = {"folder": folder, "device": torch.cuda.get_device_name(),
               "max_abs_diff_gpu_kernels_vs_cpu": (a - b).abs().max().item(),
               "max_abs_diff_gpu_dense_vs_cpu": (a - c).abs().max().item(), "logit_scale": scale,
               "argmax_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
               "tokens_per_s_kernels": tokens_per_second(gpu, ids), "tokens_per_s_dense": tokens_per_second(dense, ids)}
        if args.compile:
            graphs = ctcodec.load_model(folder, device="cuda")  # kernel layout, prepared at load
            row["tokens_per_s_kernels_graphs"] = generate_tokens_per_second(graphs, ids)
            row["tokens_per_s_dense_graphs"] = generate_tokens_per_second(dense, ids)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after every model: a run cut off by its time limit keeps its rows
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    if args.json and not rows:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
