"""marlin-24 against compressed-tensors 0.14 (the last release that wrote it): the same
2:4 weights give identical `weight_packed`, `scale_packed` and `meta`, and ctcodec
decodes them (compressed-tensors never could) to `code * scale` in fp16."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import ctcodec

ct = pytest.importorskip("compressed_tensors")
pytestmark = pytest.mark.skipif(not ct.__version__.startswith("0.14"), reason="needs compressed-tensors 0.14.x")

from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402


def two_four(rows, cols, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    keep = w.abs().view(-1, 4).topk(2, dim=1).indices
    mask = torch.zeros(rows * cols // 4, 4, dtype=torch.bool).scatter_(1, keep, True).view(rows, cols)
    return (w * mask).to(dtype)


@pytest.mark.parametrize("bits, group", [(4, 128), (4, None), (8, 128), (8, None)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_same_bytes_as_compressed_tensors(tmp_path, bits, group, dtype):
    rows, cols = 128, 256
    w = two_four(rows, cols, dtype, seed=bits + (group or 0))
    weights = {"num_bits": bits, "type": "int", "symmetric": True,
               "strategy": "group" if group else "channel", "group_size": group}
    args = QuantizationArgs(**weights)
    lo, hi = ((w.unflatten(-1, (cols // group, group)).amin(-1), w.unflatten(-1, (cols // group, group)).amax(-1))
              if group else (w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)))
    scale, zero = calculate_qparams(lo, hi, args)
    module = "model.layers.0.mlp.up_proj"
    state = {f"{module}.weight": w, f"{module}.weight_scale": scale.to(dtype), f"{module}.weight_zero_point": zero}
    compressor = BaseCompressor.load_from_registry("marlin-24")
    theirs = compressor.compress(state, names_to_scheme={module: QuantizationScheme(targets=["Linear"], weights=args)})

    src = tmp_path / "src"
    src.mkdir()
    save_file({f"{module}.weight": w}, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    out = tmp_path / "out"
    ctcodec.compress_checkpoint(src, out, recipe={"config_groups": {"g": {"targets": ["Linear"], "weights": weights}}},
                                format="marlin-24")
    ours = load_file(out / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, k
        assert torch.equal(ours[k].view(torch.uint8), v.contiguous().view(torch.uint8)), k
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "marlin-24" and qc["sparsity_config"]["sparsity_structure"] == "2:4"

    # Decoding: the fp16 codes compressed-tensors quantized, times the fp16 scales.
    q = torch.ops.aten.round(torch.clamp(w.half() / scale.half().repeat_interleave(group or cols, dim=1),
                                         -(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    expected = q * scale.half().repeat_interleave(group or cols, dim=1)
    decoded = dict(ctcodec.decompress_file(out))[f"{module}.weight"]
    assert decoded.dtype == torch.float16
    assert torch.equal(decoded, expected)
