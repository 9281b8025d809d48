"""Runs under the current compressed-tensors: dequantizes a compressed folder with
compressed-tensors' own code, model-free.

    python ct_dequantize.py COMPRESSED_DIR OUT_DIR

pack-quantized and fp4 folders go through its converter (`convert_checkpoint` with
`CompressedTensorsDequantizer`). That converter cannot read naive/int/float-quantized
folders that hold any unquantized `.weight` (a norm, the embedding): with a `Linear`
target it takes every `.weight` for a quantized root and fails looking for its
`weight_scale`. Those go module by module through the registered compressor instead.
"""

import json
import os
import sys

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.entrypoints.convert import CompressedTensorsDequantizer, convert_checkpoint
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
qc = json.load(open(os.path.join(src, "config.json")))["quantization_config"]
config = QuantizationConfig.model_validate(qc)
formats = {g.format for g in config.config_groups.values()}
if formats <= {"pack-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized"}:
    convert_checkpoint(src, dst, CompressedTensorsDequantizer(src, dtype=torch.bfloat16), max_workers=1)
else:
    (group,) = config.config_groups.values()  # one scheme over Linear layers
    cls = BaseCompressor.get_value_from_registry(group.format)
    names = cls.compression_param_names(group)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    modules = [k[: -len(".weight_scale")] for k in tensors if k.endswith(".weight_scale")]
    for m in modules:
        state = {n: tensors.pop(f"{m}.{n}") for n in names}
        tensors[f"{m}.weight"] = cls.decompress(state, group)["weight"].to(torch.bfloat16)
    os.makedirs(dst, exist_ok=True)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
print("ok")
