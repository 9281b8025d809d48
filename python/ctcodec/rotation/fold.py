"""Rotations folded into the weights of a Llama-family model folder (SpinQuant's R1 and
R2, with no online transform left): the model computes the same function, its weights
are what gets quantized.

- R1 rotates the residual stream by an orthogonal Q (hidden × hidden): each RMSNorm's
  scale is first folded into the linear layers that read it (the norm becomes
  scale-free, so it commutes with Q), then the embeddings and every layer writing to
  the stream (o_proj, down_proj) are multiplied by Q on the way out, and every layer
  reading it (q/k/v, gate/up, lm_head) by Q on the way in.
- R2 rotates each attention head's values by an orthogonal R (head_dim × head_dim):
  v_proj's output rows head by head, and o_proj's matching input columns.
- R4 (with `online=True`) turns down_proj's input by a block Hadamard V: W V is folded
  here, x V is left to the loader (`online.py`), so the checkpoint needs one that applies
  compressed-tensors' online transforms (its `apply_transform_config`, ctcodec's loaders).

Row-vector convention (y = x Wᵀ): a reader's weight becomes W Q, a writer's Qᵀ W.
A tied lm_head is untied (it gets the final norm's scale, the embeddings do not).
Weights are rotated in float64 and stored in the model's dtype."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CodecError
from ..model_folder import CONFIG_NAME, read_json, shard_paths
from .hadamard import rotation
from .online import fold_into_weight, power_of_two_block
from .rewrite import rewrite_folder

# Decoder families whose layers are pre-norm RMSNorm (weight · x / rms(x)) around
# attention and a gated MLP, with these module names.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
READERS = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
           "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj")}
WRITERS = ("self_attn.o_proj", "mlp.down_proj")


@dataclass(frozen=True)
class Rotations:
    kind: str  # hadamard | random-hadamard
    hidden: torch.Tensor  # Q, R1
    head: torch.Tensor  # R, R2
    head_dim: int
    down_block: int | None = None  # R4's block size, when down_proj's input turns online


def rotations_for(config: dict, kind: str, seed: int, online: bool = False) -> Rotations:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise CodecError(f"rotations are folded into {', '.join(FAMILIES)} models (pre-norm RMSNorm decoders), "
                         f"not {model_type!r}; with online_rotation any model gets online input rotations "
                         "on its Linear layers")
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    down_block = power_of_two_block(config["intermediate_size"]) if online else None
    return Rotations(kind, rotation(hidden, kind, seed), rotation(head_dim, kind, seed + 1), head_dim, down_block)


def _split(name: str) -> tuple[str, str] | None:
    """("model.layers.3", "self_attn.q_proj.weight") for a layer tensor, else None."""
    parts = name.split(".")
    for k in range(len(parts) - 1):
        if parts[k] == "layers" and parts[k + 1].isdigit():
            return ".".join(parts[:k + 2]), ".".join(parts[k + 2:])
    return None


class _Folder:
    """Rotates the tensors of one model, shard by shard."""

    def __init__(self, rot: Rotations, norms: dict[str, torch.Tensor], final_norm: torch.Tensor):
        self.rot, self.norms, self.final_norm = rot, norms, final_norm

    def tensor(self, name: str, t: torch.Tensor) -> torch.Tensor:
        Q, x = self.rot.hidden, t.double()
        if name.endswith("embed_tokens.weight"):
            return (x @ Q).to(t.dtype)
        if name == "lm_head.weight":
            return ((x * self.final_norm) @ Q).to(t.dtype)
        where = _split(name)
        if where is None:
            # The final norm is folded into lm_head; nothing else outside the layers turns.
            return torch.ones_like(t) if name.endswith("norm.weight") else t
        layer, local = where
        for norm, readers in READERS.items():
            if local == f"{norm}.weight":
                return torch.ones_like(t)
            if local in (f"{r}.weight" for r in readers):
                x = x * self.norms[f"{layer}.{norm}.weight"]
                if local == "self_attn.v_proj.weight":
                    x = self._heads_out(x)
                return (x @ Q).to(t.dtype)
        if local in (f"{w}.weight" for w in WRITERS):
            if local == "self_attn.o_proj.weight":
                x = self._heads_in(x)
            x = Q.T @ x
            if local == "mlp.down_proj.weight" and self.rot.down_block:
                x = fold_into_weight(x, self.rot.down_block)
            return x.to(t.dtype)
        if local in (f"{w}.bias" for w in WRITERS):
            return (x @ Q).to(t.dtype)
        if local == "self_attn.v_proj.bias":
            return self._heads_out(x.unsqueeze(1)).squeeze(1).to(t.dtype)
        return t

    def _heads_out(self, w: torch.Tensor) -> torch.Tensor:
        """Rᵀ on each head's block of output rows (v_proj)."""
        d, R = self.rot.head_dim, self.rot.head
        return (R.T @ w.reshape(-1, d, w.shape[-1])).reshape(w.shape)

    def _heads_in(self, w: torch.Tensor) -> torch.Tensor:
        """R on each head's block of input columns (o_proj)."""
        d, R = self.rot.head_dim, self.rot.head
        rows = w.shape[0]
        return (w.reshape(rows, -1, d) @ R).reshape(w.shape)


def rotate_folder(src: str | os.PathLike, dst: str | os.PathLike, kind: str = "random-hadamard",
                  seed: int = 0, online: bool = False) -> Rotations:
    """Writes `dst`, the model folder `src` with R1 and R2 (and with `online`, R4's
    weight side) folded into its weights: the same function, up to rounding to the
    model's dtype, once R4's input side runs online. Returns the rotations."""
    from safetensors import safe_open

    src, dst = Path(src), Path(dst)
    config = read_json(src / CONFIG_NAME)
    rot = rotations_for(config, kind, seed, online)
    shards = shard_paths(src)
    norms: dict[str, torch.Tensor] = {}
    embed = final_norm = None
    has_head = False
    for shard in shards:
        with safe_open(shard, "pt") as f:
            for name in f.keys():
                where = _split(name)
                if where and where[1] in (f"{n}.weight" for n in READERS):
                    norms[name] = f.get_tensor(name).double()
                elif where is None and name.endswith("norm.weight"):
                    final_norm = f.get_tensor(name).double()
                elif name.endswith("embed_tokens.weight"):
                    embed = (shard, name)
                has_head |= name == "lm_head.weight"
    if final_norm is None or embed is None:
        raise CodecError(f"{src}: no final norm or embeddings found to fold the rotation into")
    folder = _Folder(rot, norms, final_norm)

    def rotated(shard, f) -> dict[str, torch.Tensor]:
        out = {name: folder.tensor(name, f.get_tensor(name)) for name in f.keys()}
        if not has_head and shard == embed[0]:
            out["lm_head.weight"] = folder.tensor("lm_head.weight", f.get_tensor(embed[1]))
        return out

    config["tie_word_embeddings"] = False
    if rot.down_block:
        # The dense model now needs R4's input side at run time; ctcodec's loaders read it here.
        from . import transform_config

        config["transform_config"] = transform_config(rot)
    rewrite_folder(src, dst, rotated, config)
    return rot
