"""The compressed-tensors side of bench_quant.py, run under the current release in its
own process (its import path cannot hold 0.14 as well). Times, in this process:

  compress:   for every shard, load it, run the min/max observer + calculate_qparams
              + the format's compressor on each target weight, save the shard;
  decompress: for every shard, load it and decompress every quantized module.

    python ct_quant_worker.py job.json    -> prints {"seconds": [...]} as JSON
"""

import json
import sys
import time
from pathlib import Path

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors.torch import load_file, save_file

# The observer's reduction, shared with the interop tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ct_reference import observe  # noqa: E402


def compress(job, scheme, cls):
    dst = Path(job["dst"])
    dst.mkdir(parents=True, exist_ok=True)
    args = scheme.weights
    for shard, modules in job["shards"].items():
        state = load_file(Path(job["src"]) / shard)
        for m in modules:
            w = state.pop(m + ".weight")
            lo, hi = observe(w, args)
            sd = {"weight": w}
            g = None
            if args.strategy == "tensor_group":
                g = generate_gparam(w.amin(), w.amax())
                sd["weight_global_scale"] = g
            s, z = calculate_qparams(lo, hi, args, global_scale=g)
            sd["weight_scale"] = s.to(w.dtype)
            sd["weight_zero_point"] = z
            for k, v in cls.compress(sd, scheme).items():
                state[f"{m}.{k}"] = v.contiguous()
        save_file(state, dst / shard)


def decompress(job, scheme, cls):
    names = cls.compression_param_names(scheme)
    for shard, modules in job["shards"].items():
        state = load_file(Path(job["src"]) / shard)
        for m in modules:
            sd = {n: state.pop(f"{m}.{n}") for n in names}
            w = cls.decompress(sd, scheme)["weight"]
            w.view(-1)[::2048].sum()  # make sure it exists


def main():
    job = json.load(open(sys.argv[1]))
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**job["weights"]))
    cls = BaseCompressor.get_value_from_registry(job["format"])
    fn = compress if job["mode"] == "compress" else decompress
    times = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        fn(job, scheme, cls)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": times, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
