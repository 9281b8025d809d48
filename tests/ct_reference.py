"""Runs under the current compressed-tensors (its own import path, driven by
tests/ct_current.py): quantizes weights the way llm-compressor's min/max observer and
compressed-tensors' `calculate_qparams` do, compresses them with the registered
compressor, and decompresses them again, so tests can compare bytes with ctcodec.

    python ct_reference.py job.json

job: {"input": dense.safetensors, "compressed": out1, "dequantized": out2,
      "modules": [{"name": module, "weights": {...args...}, "format": fmt}]}
"""

import json
import sys

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors.torch import load_file, save_file


def observe(w: torch.Tensor, args: QuantizationArgs):
    """Min and max per scale cell, as a memoryless min/max observer reduces them."""
    s = args.strategy
    if s == "tensor":
        return w.amin(), w.amax()
    if s == "channel":
        return w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    if s in ("group", "tensor_group"):
        g = w.unflatten(-1, (w.shape[-1] // args.group_size, args.group_size))
        return g.amin(dim=-1), g.amax(dim=-1)
    if s == "block":
        bh, bw = args.block_structure
        rows, cols = w.shape
        pr, pc = (-rows) % bh, (-cols) % bw
        p = torch.nn.functional.pad(w, (0, pc, 0, pr))
        b = p.reshape(p.shape[0] // bh, bh, p.shape[1] // bw, bw)
        return b.amin(dim=(1, 3)), b.amax(dim=(1, 3))
    raise ValueError(s)


def observed_state(w: torch.Tensor, args: QuantizationArgs) -> dict:
    """A module's state after a min/max observer: the weight and its qparams."""
    lo, hi = observe(w, args)
    state = {"weight": w}
    global_scale = None
    if args.strategy == "tensor_group":
        global_scale = generate_gparam(w.amin(), w.amax())
        state["weight_global_scale"] = global_scale
    scale, zero = calculate_qparams(lo, hi, args, global_scale=global_scale)
    # The module holds its scale in the weight's dtype (fp8 values for NVFP4).
    state["weight_scale"] = scale.to(w.dtype)
    state["weight_zero_point"] = zero
    return state


def main() -> None:
    job = json.load(open(sys.argv[1]))
    tensors = load_file(job["input"])
    compressed, dequantized = {}, {}
    for m in job["modules"]:
        name, fmt = m["name"], m["format"]
        w = tensors.pop(name + ".weight")
        args = QuantizationArgs(**m["weights"])
        state = observed_state(w, args)
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        cls = BaseCompressor.get_value_from_registry(fmt)
        out = cls.compress(state, scheme)
        for k, v in out.items():
            compressed[f"{name}.{k}"] = v.contiguous()
        back = cls.decompress({k: v for k, v in out.items()}, scheme)
        dequantized[f"{name}.weight"] = back["weight"].contiguous()
    for k, v in tensors.items():
        compressed[k] = v
        dequantized[k] = v
    save_file(compressed, job["compressed"])
    save_file(dequantized, job["dequantized"])


if __name__ == "__main__":
    main()
