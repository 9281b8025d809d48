"""Random pack-quantized weights for the tests, in compressed-tensors' stored layout,
and folders ctcodec can decode (model.safetensors + a config.json naming the scheme)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ctcodec_kernels.word_packing import pack_rows


@dataclass
class QuantWeight:
    bits: int
    group: int | None  # None: per channel
    codes: torch.Tensor  # int64 [n, k] stored codes u = q + 2**(b-1)
    scales: torch.Tensor  # [n, groups] in the model dtype
    zero_codes: torch.Tensor  # int64 [n, groups] stored zero-point codes (2**(b-1) when symmetric)
    column_group: torch.Tensor  # int64 [k]
    asym: bool
    act_order: bool

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def k(self) -> int:
        return self.codes.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The checkpoint tensors of the module (without its name prefix)."""
        t = {"weight_packed": pack_rows(self.codes, self.bits), "weight_scale": self.scales,
             "weight_shape": torch.tensor([self.n, self.k], dtype=torch.int64)}
        if self.asym:
            t["weight_zero_point"] = pack_rows(self.zero_codes.t(), self.bits).t().contiguous()
        if self.act_order:
            t["weight_g_idx"] = self.column_group.to(torch.int32)
        return t

    def prepare_args(self, device="cpu") -> tuple[tuple, dict]:
        t = {k: v.to(device) for k, v in self.tensors().items()}
        return ((t["weight_packed"], t["weight_scale"], self.bits, self.group, self.n, self.k),
                {"weight_zero_point": t.get("weight_zero_point"), "weight_g_idx": t.get("weight_g_idx")})

    def exact(self) -> torch.Tensor:
        """(q - zp) * scale in float64: the weight before any rounding."""
        g = self.column_group
        return (self.codes - self.zero_codes[:, g]).double() * self.scales[:, g].double()

    def decoded(self, dtype: torch.dtype) -> torch.Tensor:
        """The fp32 product rounded once to `dtype`: ctcodec's decode when dtype is the
        scale dtype."""
        g = self.column_group
        return ((self.codes - self.zero_codes[:, g]).float() * self.scales[:, g].float()).to(dtype)


def random_weight(seed: int, bits: int, n: int, k: int, group: int | None, *, asym: bool = False,
                  act_order: bool | str = False, scale_dtype: torch.dtype = torch.bfloat16,
                  scale_range: tuple[float, float] = (0.01, 0.2)) -> QuantWeight:
    """act_order: True for compressed-tensors' activation order (each group keeps its
    size, columns shuffled), "uneven" for arbitrary group ids per column."""
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group is None else -(-k // group)
    codes = torch.randint(0, 2**bits, (n, k), generator=g)
    lo, hi = scale_range
    scales = (torch.rand(n, groups, generator=g) * (hi - lo) + lo).to(scale_dtype)
    zero = torch.randint(0, 2**bits, (n, groups), generator=g) if asym else torch.full((n, groups), 2 ** (bits - 1))
    column_group = torch.zeros(k, dtype=torch.int64) if group is None else torch.arange(k) // group
    if act_order == "uneven":
        column_group = torch.randint(0, groups, (k,), generator=g)
    elif act_order:
        column_group = column_group[torch.randperm(k, generator=g)]
    return QuantWeight(bits, group, codes, scales, zero, column_group, asym, bool(act_order))


def write_checkpoint(folder: Path, weights: dict[str, QuantWeight]) -> Path:
    """A model folder ctcodec decodes: one config group per module (each its own scheme)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, groups = {}, {}
    for i, (module, w) in enumerate(weights.items()):
        tensors.update({f"{module}.{name}": t for name, t in w.tensors().items()})
        args = {"num_bits": w.bits, "type": "int", "symmetric": not w.asym, "dynamic": False,
                "strategy": "channel" if w.group is None else "group", "group_size": w.group}
        if w.act_order:
            args["actorder"] = "group"
        groups[f"group_{i}"] = {"targets": [module], "weights": args, "format": "pack-quantized"}
    save_file(tensors, folder / "model.safetensors")
    qc = {"quant_method": "compressed-tensors", "version": "0.20.0", "format": "pack-quantized",
          "config_groups": groups}
    (folder / "config.json").write_text(json.dumps({"quantization_config": qc}))
    return folder
