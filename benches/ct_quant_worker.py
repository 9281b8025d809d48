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
from safetensors.torch import load_file, save_file

# The observer and qparams, shared with the interop tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ct_reference import observed_state  # noqa: E402


def compress(job, scheme, cls):
    dst = Path(job["dst"])
    dst.mkdir(parents=True, exist_ok=True)
    args = scheme.weights
    for shard, modules in job["shards"].items():
        state = load_file(Path(job["src"]) / shard)
        for m in modules:
            sd = observed_state(state.pop(m + ".weight"), args)
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
