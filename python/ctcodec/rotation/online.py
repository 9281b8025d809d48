"""Online input rotations (SpinQuant's R4): where no neighbouring weight can absorb a
rotation (the SiLU-gated product entering `down_proj`), the layer's weight turns by an
orthogonal V on its input side and its input by the same V at run time:
(x V)(W V)ᵀ = x Wᵀ. W V is what gets quantized; x V is computed by every loader.

compressed-tensors records such a pair as one transform group with an `input` and a
`weight_input` location. We use its deterministic `hadamard` type: a Sylvester matrix
that any loader rebuilds from the size alone (a random one would have to be stored),
block-diagonal in blocks of `head_dim`, the largest power of two dividing the width, and
applied exactly as compressed-tensors does (float64, divided by √block)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import CodecError
from ..targets import is_target
from .hadamard import hadamard

DOWN_TARGETS = ["re:.*down_proj$"]


def power_of_two_block(n: int) -> int:
    """The largest power of two dividing n: Sylvester blocks need one."""
    return n & -n


def input_rotation_group(block: int, targets: list[str] = DOWN_TARGETS, ignore: list[str] = ()) -> dict:
    """The transform_config group of an online input rotation in blocks of `block`."""
    return {"type": "hadamard", "head_dim": block, "randomize": False, "requires_grad": False,
            "precision": "torch.float64", "apply": [
                {"targets": list(targets), "location": "input", "inverse": False, "ignore": list(ignore)},
                {"targets": list(targets), "location": "weight_input", "inverse": True, "ignore": list(ignore)}]}


def _blocks(x: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """x (…, n) times the block-diagonal matrix of H (b × b) blocks, as compressed-tensors'
    multi-head matmul computes it."""
    b = H.shape[0]
    if x.shape[-1] == b:
        return x @ H
    return (x.unflatten(-1, (x.shape[-1] // b, b)) @ H).flatten(-2, -1)


def fold_into_weight(weight: torch.Tensor, block: int) -> torch.Tensor:
    """W V (float64) for the online rotation V in blocks of `block`."""
    H = hadamard(block)
    return _blocks(weight.double(), H) / torch.tensor(block, dtype=torch.float64).sqrt()


@dataclass
class InputRotation:
    """A forward pre-hook turning a Linear layer's input by V (picklable, so layers
    carrying it travel to cluster workers)."""

    block: int
    _H: dict = field(default_factory=dict, repr=False)  # the matrix per device, made once

    def __call__(self, _module, args):
        x = args[0]
        H = self._H.get(x.device)
        if H is None:
            H = self._H[x.device] = hadamard(self.block).to(x.device)
        scale = torch.tensor(self.block, dtype=torch.float64).sqrt()
        turned = (_blocks(x.to(torch.float64), H) / scale).to(x.dtype)
        return (turned, *args[1:])


@dataclass(frozen=True)
class OnlineRule:
    targets: tuple[str, ...]
    ignore: tuple[str, ...]
    block: int


def online_rules(transform_config: dict | None) -> list[OnlineRule]:
    """The online input rotations a transform_config asks of a loader. Weight locations
    are already folded into stored weights; online kinds that need a stored or random
    matrix are refused rather than silently skipped (the model would compute garbage)."""
    rules = []
    for name, group in ((transform_config or {}).get("config_groups") or {}).items():
        for apply in group.get("apply", []):
            location = apply.get("location")
            if location in ("weight_input", "weight_output"):
                continue
            if location != "input" or apply.get("inverse") or group.get("type") != "hadamard" \
                    or group.get("randomize"):
                raise CodecError(f"transform group {name!r}: online {group.get('type')!r} at {location!r} "
                                 f"(inverse={apply.get('inverse')}, randomize={group.get('randomize')}) is not "
                                 "supported; ctcodec applies deterministic Hadamard input rotations only")
            block = group.get("head_dim")
            if not block or block & (block - 1):
                raise CodecError(f"transform group {name!r}: online hadamard needs a power-of-two head_dim, "
                                 f"not {block!r}")
            rules.append(OnlineRule(tuple(apply["targets"]), tuple(apply.get("ignore", [])), block))
    return rules


def attach_online_rotations(model: torch.nn.Module, transform_config: dict | None, prefix: str = "") -> int:
    """Registers the input rotations of `transform_config` on the matching Linear layers
    of `model` (named `prefix` + their name inside it); returns how many."""
    rules = online_rules(transform_config)
    count = 0
    for name, module in model.named_modules():
        if not rules or not hasattr(module, "in_features"):
            continue
        full = f"{prefix}{name}"
        shape = (getattr(module, "out_features", 0), module.in_features)
        for rule in rules:
            if is_target(full, shape, rule.targets, rule.ignore):
                if module.in_features % rule.block:
                    raise CodecError(f"{full}: width {module.in_features} is no multiple of the online "
                                     f"rotation's block {rule.block}")
                module.register_forward_pre_hook(InputRotation(rule.block), prepend=True)
                count += 1
    return count


def declared_transforms(config: dict) -> dict | None:
    """The transform_config a config.json declares: a compressed checkpoint's in its
    quantization_config; a dense rotated folder (`rotate_folder(online=True)`, no
    quantization yet) keeps it at the top level, where transformers ignores it."""
    return (config.get("quantization_config") or {}).get("transform_config") or config.get("transform_config") or None


__all__ = ["DOWN_TARGETS", "InputRotation", "OnlineRule", "attach_online_rotations", "fold_into_weight",
           "input_rotation_group", "declared_transforms", "online_rules", "power_of_two_block"]
