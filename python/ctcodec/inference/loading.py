"""Building a transformers model straight from a compressed checkpoint: linear layers
whose format has a kernel (pack-quantized integers, SpQR) become `CompressedLinear`
modules filled with the stored tensors; every other tensor is decoded by ctcodec (one
at a time) into the model. No dense copy of a compressed weight is ever made."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from .. import _native
from ..errors import CodecError
from ..model_folder import CONFIG_NAME, read_json, shard_paths
from ..reading import declared_format, declared_quantization, shard_schemes
from ..rotation.online import attach_online_rotations, declared_transforms
from ..tensors import from_raw
from .checks import check_pack, check_spqr
from ..scheme_presets import WeightSpec
from ..spqr_format import SpqrParams
from .compiled import compile_for_decoding
from .linear import PACK_PARTS, SPQR_PARTS, CompressedLinear, prepare_kernels


def _kernel_modules(schemes: dict[str, WeightSpec | SpqrParams]) -> dict[str, tuple[str, dict]]:
    """Modules whose scheme a CompressedLinear holds: module -> (kind, params)."""
    out = {}
    for module, spec in schemes.items():
        if isinstance(spec, SpqrParams):
            out[module] = ("spqr", {"bits": spec.bits, "beta1": spec.beta1, "beta2": spec.beta2,
                                    "qq_scale_bits": spec.qq_scale_bits, "qq_zero_bits": spec.qq_zero_bits})
        elif spec.format == "pack-quantized" and spec.type == "int" and spec.strategy in ("group", "channel"):
            out[module] = ("pack", {"num_bits": spec.num_bits, "symmetric": spec.symmetric,
                                    "group_size": spec.group_size if spec.strategy == "group" else None})
    return out


def _set_tensor(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> bool:
    owner, _, leaf = name.rpartition(".")
    try:
        mod = model.get_submodule(owner) if owner else model
    except AttributeError:
        return False
    if leaf in mod._parameters:
        old = mod._parameters[leaf]
        mod._parameters[leaf] = torch.nn.Parameter(tensor.to(old.dtype), requires_grad=False)
        return True
    if leaf in mod._buffers:
        mod._buffers[leaf] = tensor.to(mod._buffers[leaf].dtype)
        return True
    return False


def _checkpoint_to_model_names(model: torch.nn.Module, names) -> dict[str, str]:
    """Checkpoint tensor names -> the model's, which may lack (or add) a base-model
    prefix such as `bert.` or `model.`."""
    own = set(model.state_dict().keys()) | {n for n, _ in model.named_modules()}
    prefix = getattr(model, "base_model_prefix", "")
    out = {}
    for n in names:
        for cand in (n, n[len(prefix) + 1:] if prefix and n.startswith(prefix + ".") else None,
                     f"{prefix}.{n}" if prefix else None):
            owner = cand.rpartition(".")[0] if cand else None
            if cand and (cand in own or owner in own):
                out[n] = cand
                break
    return out


def replace_modules(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Swaps the linear layers of `model` that `path` stores in a kernel format for
    CompressedLinear modules holding the stored tensors, and loads every other tensor of
    the checkpoint (decoded by ctcodec where compressed) into `model`. Returns the
    number of compressed modules."""
    quant = declared_quantization(path)
    fmt = declared_format(path)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    swapped = 0
    for shard in shard_paths(path):
        schemes = shard_schemes(shard, quant) or {}
        kernel = _kernel_modules(schemes)
        others = {m: s for m, s in schemes.items() if m not in kernel}
        reader = _native.CompressedFile(os.fspath(shard), fmt, "auto", others or None)
        entries = reader.entries()
        names = _checkpoint_to_model_names(model, [e[0] for e in entries] + [f"{m}.weight" for m in kernel])
        modules = {}
        for module, (kind, params) in kernel.items():
            target = names.get(f"{module}.weight", f"{module}.weight").rpartition(".")[0]
            old = model.get_submodule(target)
            if not isinstance(old, (torch.nn.Linear, CompressedLinear)):
                raise CodecError(f"{shard}: module {module!r} is a {type(old).__name__}, not a Linear layer")
            new = CompressedLinear(old.in_features, old.out_features, kind, params, old.bias is not None, dtype)
            parent, _, leaf = target.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)
            modules[module] = new
            swapped += 1
        wanted = PACK_PARTS + SPQR_PARTS
        for i, (name, dtype_name, shape, _c) in enumerate(entries):
            module, _, part = name.rpartition(".")
            raw = reader.read(i)
            tensor = from_raw(raw, dtype_name, shape, "torch").clone()
            if module in modules and part in wanted:
                modules[module].set_part(part, tensor)
            elif not _set_tensor(model, names.get(name, name), tensor):
                if module in modules and part == "bias":
                    modules[module].bias = torch.nn.Parameter(tensor.to(dtype), requires_grad=False)
                else:
                    raise CodecError(f"{shard}: tensor {name!r} has no place in {type(model).__name__}")
        for module, mod in modules.items():
            check = check_spqr if mod.kind == "spqr" else check_pack
            try:
                check(mod.parts(), mod.params, mod.out_features, mod.in_features)
            except ValueError as e:
                raise CodecError(f"{shard}: module {module!r}: {e}") from None
    return swapped


_HEADS = ("ForCausalLM", "ForSequenceClassification", "ForMaskedLM", "ForTokenClassification",
          "ForQuestionAnswering")


def model_class(config, causal: bool | None = None):
    """The auto class for the head config.json's architecture names (a causal LM, a
    classifier, ...), else the base model."""
    import transformers

    if causal:
        return transformers.AutoModelForCausalLM
    if causal is None:
        for arch in config.architectures or []:
            head = next((h for h in _HEADS if arch.endswith(h)), None)
            if head is not None:
                return getattr(transformers, "AutoModel" + head)
    return transformers.AutoModel


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               causal: bool | None = None, kernel_layout: bool | None = None, compile: bool = False):
    """A transformers model built from `path`'s config.json with empty weights, its
    linear layers in kernel formats swapped for CompressedLinear and every other tensor
    loaded from the checkpoint; moved to `device` (CUDA runs the Triton kernels).

    `kernel_layout` (default: on CUDA) repacks pack-quantized weights into the kernels'
    layout once, here, so a call decides nothing: `torch.compile(model, fullgraph=True,
    mode="reduce-overhead")` then traces each layer as one `ctcodec::kernel_linear` op
    and captures a decode step in a CUDA graph (call the model once before capturing:
    the first call per shape picks the kernel's tile sizes). `compile=True` does that
    for `generate`: compiled.compile_for_decoding (static cache, fullgraph; CUDA graphs
    on CUDA)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # our modules, not transformers' quantizers
    dtype = dtype or getattr(config, "torch_dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    auto = model_class(config, causal)
    with init_empty_weights():  # parameters on the meta device; buffers (rotary tables) real
        try:
            model = auto.from_config(config, dtype=dtype)
        except TypeError:  # transformers before `dtype` replaced `torch_dtype`
            model = auto.from_config(config, torch_dtype=dtype)
    replace_modules(model, path)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    attach_online_rotations(model, declared_transforms(read_json(path / CONFIG_NAME)))
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise CodecError(f"{path}: the checkpoint has no tensor for {missing[0]!r} ({len(missing)} missing)")
    model.eval()
    if device is not None:
        model = model.to(device)
    if kernel_layout if kernel_layout is not None else torch.device(device or "cpu").type == "cuda":
        prepare_kernels(model)
    if compile:
        compile_for_decoding(model)
    return model
