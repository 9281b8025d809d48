"""Fixture generator for the ORIGINAL SpQR "legacy" per-layer checkpoint layout.

The original repository (github.com/Vahe1994/SpQR, checked at HEAD 543d10e) writes, for
``python main.py MODEL DATA ... --save DIR``::

    DIR/<block_idx>/<sublayer_name>   torch.save(save_quant_dict)   e.g. DIR/0/self_attn.q_proj
    DIR/args.pt                       torch.save(vars(args))
    DIR/not_quantized_weights.pt      torch.save({param_name: nn.Parameter})

This module re-implements, independently and on the CPU, what produces those files:

* ``SPQRUtil.quantize(save_quantization=True)`` in ``spqr_engine.py`` (GPTQ with act-order,
  dead columns, damping, per-(row, column-group) min-max statistics, second-order quantization of
  the statistics, leave-one-out outlier pre-detection, per-column outlier rule) and the
  ``Quantizer`` / ``quantize`` / ``dequantize`` helpers of ``quant_groups.py``, plus
  ``get_permutation_order`` of ``weight_permutation.py``  -> :func:`quantize_layer_legacy`;
* ``modelutils.layer_weight_dequantization`` (what ``main.py --load`` uses) -> :func:`dequantize_legacy`;
* the ``--save`` part of ``main.quantize_spqr`` -> :func:`save_legacy_model`.

Results are not bit-identical to a GPU run of the original (different reduction orders in
matmul / Cholesky), but every formula, dtype, shape, key and list layout follows the source.

Public API
----------
``quantize_layer_legacy(weight, H, *, ...) -> dict``            the ``save_quant_dict``
``quantize_layer_legacy_full(weight, H, *, ...) -> LegacyQuantResult``  same plus GPTQ output
``dequantize_legacy(save_quant_dict) -> torch.Tensor``           fp32 ``[m, n]``
``save_legacy_model(model_dir_out, layers, not_quantized, args, *, ...) -> Path``
``default_legacy_args(**overrides) -> dict``                    a ``vars(args)``-like dict
``random_hessian(n, seed, *, ...) -> torch.Tensor``              fp32 ``[n, n]``, PSD, one dead column
``accumulate_hessian(batches) -> torch.Tensor``                   ``SPQRUtil.add_batch`` running average
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Optional, Union

import torch

__all__ = [
    "LegacyQuantResult",
    "accumulate_hessian",
    "default_legacy_args",
    "dequantize_legacy",
    "get_permutation_order",
    "quantize_layer_legacy",
    "quantize_layer_legacy_full",
    "random_hessian",
    "save_legacy_model",
    "SAVE_QUANT_DICT_KEYS",
]

# Insertion order of the keys in the original's save_quant_dict (spqr_engine.py builds the first
# nine up front, the metadata after the column loop, and main.py adds "sublayer_name" last).
SAVE_QUANT_DICT_KEYS = (
    "quant_weights",
    "quant_layer_scale",
    "quant_layer_zeros",
    "quant_layer_scale_qq_scale",
    "quant_layer_scale_qq_zero",
    "quant_layer_zero_qq_scale",
    "quant_layer_zero_qq_zero",
    "save_float_dtype",
    "outliers_matrix",
    "perm",
    "keep_last_columns",
    "blocksize",
    "weight_shape",
    "groupsize",
    "sublayer_name",
)

_EPS = 1e-9  # quant_groups.quantize / dequantize default eps


# ---------------------------------------------------------------------------------------------
# quant_groups.py equivalents
# ---------------------------------------------------------------------------------------------


def _q(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq) -> torch.Tensor:
    """Codes as floats: clamp(round(x / max(scale, eps) + zero), 0, maxq)."""
    return torch.clamp(torch.round(x / scale.clamp_min(_EPS) + zero), 0, maxq)


def _dq(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """scale * (codes - zero); note: no eps here (the original ignores its eps argument)."""
    return scale * (codes - zero)


class _MinMaxQuantizer:
    """Per-row asymmetric (or symmetric) min-max quantizer, like ``Quantizer`` with perchannel=True
    and ``find_params(x, weight=True)`` on a 2-D ``x``; optional second-order quantization of the
    per-row scales / zeros over groups of ``qq_groupsize`` consecutive rows."""

    def __init__(
        self,
        bits: int,
        *,
        sym: bool = False,
        round_zero: bool = False,
        qq_scale_bits: Optional[int] = None,
        qq_zero_bits: Optional[int] = None,
        qq_groupsize: int = 16,
        qq_zero_sym: bool = False,
    ):
        self.bits = bits
        self.maxq = torch.tensor(2**bits - 1)  # reserved_bins = 0
        self.sym = sym
        self.round_zero = bool(round_zero)
        self.qq_scale_bits = qq_scale_bits
        self.qq_zero_bits = qq_zero_bits
        self.qq_groupsize = qq_groupsize
        self.qq_zero_sym = qq_zero_sym
        self.scale = torch.zeros(1)
        self.zero = torch.zeros(1)
        # filled by fit() when second-order quantization is active
        self.qq_scale: Optional[_MinMaxQuantizer] = None
        self.qq_zero: Optional[_MinMaxQuantizer] = None
        self.quant_scale: Optional[torch.Tensor] = None
        self.quant_zero: Optional[torch.Tensor] = None

    @property
    def zero_is_second_order(self) -> bool:
        # exact condition of Quantizer.find_params / SPQRUtil.quantize
        return self.qq_zero_bits is not None and ((not self.round_zero) or self.qq_zero_bits < self.bits)

    def fit(self, x: torch.Tensor) -> "_MinMaxQuantizer":
        assert x.ndim == 2, x.shape
        xmin = x.min(1).values
        xmax = x.max(1).values
        if self.sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            neg = xmin < 0
            if torch.any(neg):
                xmin[neg] = -xmax[neg]
        flat = xmin == xmax
        xmin[flat] = -1
        xmax[flat] = +1

        scale = (xmax - xmin) / self.maxq
        if self.sym:
            zero = torch.full_like(scale, (self.maxq + 1) / 2)
        else:
            zero = -xmin / scale
            if self.round_zero:
                zero = torch.round(zero)

        if self.qq_scale_bits is not None:
            groups = scale.reshape(-1, self.qq_groupsize)
            self.qq_scale = _MinMaxQuantizer(self.qq_scale_bits, sym=False, round_zero=False).fit(groups)
            self.quant_scale = self.qq_scale.quantize(groups)  # float codes [rows/qq, qq]
            scale = self.qq_scale.dequantize(self.quant_scale).reshape_as(scale)

        if self.zero_is_second_order:
            groups = zero.reshape(-1, self.qq_groupsize)
            self.qq_zero = _MinMaxQuantizer(self.qq_zero_bits, sym=self.qq_zero_sym, round_zero=False).fit(groups)
            self.quant_zero = self.qq_zero.quantize(groups)
            zero = self.qq_zero.dequantize(self.quant_zero).reshape_as(zero)

        self.scale = scale.reshape(-1, 1)
        self.zero = zero.reshape(-1, 1)
        return self

    # Quantizer.quantize / dequantize / quantize_dequantize are identity maps unless ready()
    def ready(self) -> bool:
        return bool(torch.all(self.scale != 0))

    def quantize(self, x):
        return _q(x, self.scale, self.zero, self.maxq) if self.ready() else x

    def dequantize(self, x):
        return _dq(x, self.scale, self.zero) if self.ready() else x

    def quantize_dequantize(self, x):
        return _dq(_q(x, self.scale, self.zero, self.maxq), self.scale, self.zero) if self.ready() else x


# ---------------------------------------------------------------------------------------------
# weight_permutation.py equivalent
# ---------------------------------------------------------------------------------------------


def _greedy_nearest_order(w: torch.Tensor, use_abs: bool = False) -> torch.Tensor:
    rows = w.detach().t().clone()
    rows /= rows.norm(p=2, dim=-1, keepdim=True)
    sim = rows @ rows.T
    if use_abs:
        sim = sim.abs()
    order = torch.arange(len(rows), device=w.device)
    for i in range(len(rows) - 2):
        j = (i + 1) + int(sim[i, i + 1 :].argmax())
        a = torch.tensor([i + 1, j], device=w.device)
        b = torch.tensor([j, i + 1], device=w.device)
        rows[a] = rows[b]
        sim[a] = sim[b]
        sim[:, a] = sim[:, b]
        order[a] = order[b]
    return order


def get_permutation_order(
    H: torch.Tensor, W: torch.Tensor, permutation_order: Union[str, torch.Tensor] = "identity"
) -> torch.Tensor:
    """int64 permutation of the input columns; ``weight[:, perm]`` is the processing/storage order.

    ``act_order`` = argsort(diag(H), descending=True) on the UN-damped H (dead columns sort last).
    """
    if isinstance(permutation_order, torch.Tensor):
        return permutation_order
    if permutation_order == "act_order":
        return torch.argsort(torch.diag(H), descending=True)
    if permutation_order == "identity":
        return torch.arange(H.shape[0], device=H.device)
    if permutation_order == "spearman":
        rank = W.argsort(dim=0).argsort(dim=0).float()
        rank = rank - rank.mean(dim=0, keepdim=True)
        return _greedy_nearest_order(rank)
    raise ValueError(f"Unknown permutation order name: {permutation_order}")


# ---------------------------------------------------------------------------------------------
# spqr_engine.py equivalents
# ---------------------------------------------------------------------------------------------


def _leave_one_out_error_reduction(
    group_weight: torch.Tensor, group_u_diag: torch.Tensor, *, bits: int, sym: bool
) -> torch.Tensor:
    """[rows, g]: baseline U-weighted squared error of the row minus the error when the quantizer
    is fitted without weight (row, c) and that weight is left unquantized (first-order only)."""
    g = group_weight.shape[1]
    idx = torch.arange(g, device=group_weight.device)
    # row c of loo_idx lists every column except c, in increasing order: shape [g, g-1]
    loo_idx = idx[1:] - (idx[:, None] >= idx[1:]).to(idx.dtype)
    loo_data = group_weight[:, loo_idx]  # [rows, g, g-1]
    flat = loo_data.flatten(0, 1)
    fast = _MinMaxQuantizer(bits, sym=sym).fit(flat)
    loo_rec = fast.quantize_dequantize(flat).reshape_as(loo_data)
    loo_err = ((loo_rec - loo_data) / group_u_diag[loo_idx]).square().sum(-1)  # [rows, g]

    base = _MinMaxQuantizer(bits, sym=sym).fit(group_weight)
    base_rec = base.quantize_dequantize(group_weight)
    base_err = ((base_rec - group_weight) / group_u_diag).square().sum(dim=1, keepdim=True)  # [rows, 1]
    return base_err - loo_err


class LegacyQuantResult(NamedTuple):
    """Mirror of the original ``QuantizationResult``."""

    weight: torch.Tensor  # fp32 [m, n], GPTQ output (incl. fp32 outliers), original column order
    perm: torch.Tensor  # int64 [n]
    quantization_errors: torch.Tensor  # fp32 [m, n], permuted order
    unstructured_outlier_threshold: float
    unstructured_outlier_mask: torch.Tensor  # bool [m, n], permuted order
    save_quant_dict: dict


@torch.no_grad()
def quantize_layer_legacy_full(
    weight: torch.Tensor,
    H: torch.Tensor,
    *,
    wbits: int = 3,
    groupsize: Optional[int] = 16,
    qq_scale_bits: Optional[int] = 3,
    qq_zero_bits: Optional[int] = 3,
    qq_groupsize: int = 16,
    outlier_relative_threshold: float = 0.2,
    permutation_order: Union[str, torch.Tensor] = "act_order",
    percdamp: float = 1.0,
    blocksize: int = 128,
    simplified_outliers: bool = False,
    save_float_dtype: Optional[torch.dtype] = torch.float16,
    sym: bool = False,
    round_zero: bool = False,
    qq_zero_sym: bool = False,
    sublayer_name: Optional[str] = None,
) -> LegacyQuantResult:
    """Re-implementation of ``SPQRUtil.quantize(..., save_quantization=True)``; see
    :func:`quantize_layer_legacy` for the parameters. Also returns the GPTQ-dequantized weight,
    the permutation, the per-element errors, the absolute outlier threshold and the outlier mask."""
    if weight.ndim != 2:
        raise ValueError(f"weight must be [out_features, in_features], got {tuple(weight.shape)}")
    out_dim, in_dim = weight.shape
    if tuple(H.shape) != (in_dim, in_dim):
        raise ValueError(f"H must be [{in_dim}, {in_dim}], got {tuple(H.shape)}")
    uses_qq = qq_scale_bits is not None or (
        qq_zero_bits is not None and ((not round_zero) or qq_zero_bits < wbits)
    )
    if uses_qq and out_dim % qq_groupsize:
        # the original fails in Tensor.reshape(-1, qq_groupsize)
        raise ValueError(f"out_features={out_dim} must be a multiple of qq_groupsize={qq_groupsize}")

    if save_float_dtype is None:
        save_float_dtype = weight.dtype  # what the original does: self.layer.weight.dtype
    W = weight.detach().to(dtype=torch.float32, copy=True)
    H = H.detach().to(dtype=torch.float32, copy=True)  # SPQRUtil.H is always fp32

    perm = get_permutation_order(H, W, permutation_order)
    outliers_dense = torch.zeros(W.shape, dtype=save_float_dtype)
    codes_per_column: list[torch.Tensor] = []
    stats = {k: [] for k in SAVE_QUANT_DICT_KEYS[1:7]}

    W = W[:, perm]
    H = H[perm][:, perm]
    dead = torch.diag(H) == 0
    if percdamp > 0:
        ix = torch.arange(len(H))
        H[ix, ix] += percdamp * abs(torch.diag(H)).mean()
    H[dead, dead] = 1
    W[:, dead] = 0
    H_inv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(H_inv, upper=True)  # upper Cholesky factor of H^-1
    U_diag = torch.diag(U)
    del H, H_inv

    if groupsize is None:
        groupsize = in_dim

    quantizer = _MinMaxQuantizer(
        wbits,
        sym=sym,
        round_zero=round_zero,
        qq_scale_bits=qq_scale_bits,
        qq_zero_bits=qq_zero_bits,
        qq_groupsize=qq_groupsize,
        qq_zero_sym=qq_zero_sym,
    )

    # torch.var default = unbiased (N-1) variance over the output rows of each (permuted) column
    outlier_scale = (W.var(dim=0) / U_diag.square()).mean().item()
    threshold = outlier_relative_threshold * outlier_scale
    detect_outliers = threshold != float("inf")

    errors = torch.zeros_like(W)
    outlier_mask = torch.zeros_like(W, dtype=torch.bool)

    for block_start in range(0, in_dim, blocksize):  # keep_last_columns is always 0 in main.py
        block_end = min(block_start + blocksize, in_dim)
        for c in range(block_start, block_end):
            if c % groupsize == 0:
                group_weight = W[:, c : c + groupsize]
                if simplified_outliers or threshold == float("inf"):
                    quantizer.fit(group_weight)
                else:
                    reduction = _leave_one_out_error_reduction(
                        group_weight, U_diag[c : c + groupsize], bits=wbits, sym=sym
                    )
                    likely = (reduction > threshold).float()
                    keep = 1 - likely
                    row_mean = torch.sum(group_weight * keep, dim=1, keepdim=True) / torch.sum(
                        keep, dim=1, keepdim=True
                    ).clamp_min(1)
                    quantizer.fit(group_weight * keep + row_mean * (1 - keep))

                if qq_scale_bits is not None:
                    stats["quant_layer_scale"].append(quantizer.quant_scale.to(torch.int8))
                    stats["quant_layer_scale_qq_scale"].append(quantizer.qq_scale.scale.to(save_float_dtype))
                    stats["quant_layer_scale_qq_zero"].append(quantizer.qq_scale.zero.to(save_float_dtype))
                else:
                    stats["quant_layer_scale"].append(quantizer.scale.to(save_float_dtype))
                if quantizer.zero_is_second_order:
                    stats["quant_layer_zeros"].append(quantizer.quant_zero.to(torch.int8))
                    stats["quant_layer_zero_qq_scale"].append(quantizer.qq_zero.scale.to(save_float_dtype))
                    stats["quant_layer_zero_qq_zero"].append(quantizer.qq_zero.zero.to(save_float_dtype))
                else:
                    stats["quant_layer_zeros"].append(quantizer.zero.to(save_float_dtype))

            col = W[:, c]
            codes = _q(col.unsqueeze(1), quantizer.scale, quantizer.zero, quantizer.maxq)
            col_hat = _dq(codes, quantizer.scale, quantizer.zero).reshape_as(col)
            errors[:, c] = (col - col_hat) / U[c, c]

            if detect_outliers:
                outlier_mask[:, c] = errors[:, c].square() > threshold
                is_out = outlier_mask[:, c].float()
                # outliers are zeroed before coding, so their stored code is quantize(0)
                codes = _q((col * (1 - is_out)).unsqueeze(1), quantizer.scale, quantizer.zero, quantizer.maxq)
                col_hat_wo = _dq(codes, quantizer.scale, quantizer.zero).reshape_as(col)
                col_hat = col_hat_wo * (1 - is_out) + col * is_out
                outliers_dense[:, c] = col * is_out  # GPTQ-updated value, cast to save_float_dtype
                errors[:, c] = (col - col_hat) / U[c, c]

            codes_per_column.append(codes.to(torch.int8))
            W[:, c] = col_hat
            W[:, c + 1 : block_end].addr_(errors[:, c], U[c, c + 1 : block_end], alpha=-1)

        W[:, block_end:].addmm_(errors[:, block_start:block_end], U[block_start:block_end, block_end:], alpha=-1)

    is_identity = isinstance(permutation_order, str) and permutation_order == "identity"
    if not is_identity:
        W = W[:, torch.argsort(perm)]

    d: dict = {"quant_weights": torch.cat(codes_per_column, dim=1)}
    d.update(stats)  # keeps the original insertion order of the six stat lists
    d["save_float_dtype"] = save_float_dtype
    d["outliers_matrix"] = outliers_dense.to_sparse()
    d["perm"] = perm.to(torch.int32)
    d["keep_last_columns"] = 0
    d["blocksize"] = 128  # the original hard-codes 128 here, whatever blocksize GPTQ used
    d["weight_shape"] = W.shape
    d["groupsize"] = groupsize if groupsize else W.shape[1]
    if sublayer_name is not None:
        d["sublayer_name"] = sublayer_name
    return LegacyQuantResult(W, perm, errors, threshold, outlier_mask, d)


def quantize_layer_legacy(weight: torch.Tensor, H: torch.Tensor, **kwargs) -> dict:
    """Quantize one Linear weight like the original ``SPQRUtil.quantize(save_quantization=True)``
    and return its ``save_quant_dict``.

    Parameters (keyword-only; defaults = the repository's ``script.sh`` config)
        weight: ``[m=out_features, n=in_features]`` fp16 / bf16 / fp32 (copied to fp32).
        H: ``[n, n]`` Hessian proxy (cast to fp32, as ``SPQRUtil.H`` is), e.g. :func:`random_hessian`.
        wbits=3, groupsize=16 (None = one group of all n columns), qq_scale_bits=3, qq_zero_bits=3
            (None = keep that statistic in save_float_dtype), qq_groupsize=16 (m must be a multiple),
        outlier_relative_threshold=0.2 (inf = no outliers), permutation_order="act_order"
            ("identity", "spearman" or an explicit index tensor also accepted), percdamp=1.0
            (the original's argparse default is 0.01; README/script.sh use 1e0), blocksize=128,
        simplified_outliers=False, save_float_dtype=torch.float16 (None = weight.dtype, which is
            what the original uses: the layer dtype), sym=False, round_zero=False, qq_zero_sym=False,
        sublayer_name=None (main.py adds it when saving; :func:`save_legacy_model` does too).

    Returned dict (insertion order as in the original; m rows, n cols, G = ceil(n / groupsize)):
        quant_weights               int8 [m, n] codes in 0..2^wbits-1, permuted column order;
                                    quantize(0) at outlier positions
        quant_layer_scale           list of G: int8 [m/qq, qq] codes   (fp [m, 1] if qq_scale_bits None)
        quant_layer_zeros           list of G: int8 [m/qq, qq] codes   (fp [m, 1] if not second-order)
        quant_layer_scale_qq_scale  list of G: save_float_dtype [m/qq, 1]  ([] if qq_scale_bits None)
        quant_layer_scale_qq_zero   list of G: save_float_dtype [m/qq, 1]
        quant_layer_zero_qq_scale   list of G: save_float_dtype [m/qq, 1]  ([] if zeros not second-order)
        quant_layer_zero_qq_zero    list of G: save_float_dtype [m/qq, 1]
        save_float_dtype            torch.dtype
        outliers_matrix             sparse COO (coalesced) save_float_dtype [m, n], permuted columns
        perm                        int32 [n]  (weight[:, perm] is the stored column order)
        keep_last_columns           0
        blocksize                   128 (always)
        weight_shape                torch.Size([m, n])
        groupsize                   int
        sublayer_name               str (only if given)
    """
    return quantize_layer_legacy_full(weight, H, **kwargs).save_quant_dict


# ---------------------------------------------------------------------------------------------
# modelutils.layer_weight_dequantization equivalent
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def dequantize_legacy(save_quant_dict: Mapping) -> torch.Tensor:
    """Reconstruct the fp32 ``[m, n]`` weight exactly the way ``modelutils.layer_weight_dequantization``
    does (vectorised over the columns of a group; every element goes through the same ops/dtypes):

    1. per column group g: second-order stats are stored in ``save_float_dtype`` (F, fp16 for LLaMA), codes
       in int8. ``scale_g = qq_scale * (int8 codes - qq_zero)`` and likewise ``zero_g``: int8 - F -> F,
       F * F -> F, so the first-order statistics are rebuilt in F (not fp32). Without second-order
       quantization the stored F ``[m, 1]`` statistics are used as they are.
    2. ``w = scale_g.reshape(-1, 1) * (int8 code - zero_g.reshape(-1, 1))`` computed in F, then written
       into an fp32 ``torch.zeros(weight_shape)`` buffer (F -> fp32 cast).
    3. outliers REPLACE: ``w = w * (outliers_dense == 0) + outliers_dense`` (fp32 * bool, fp32 + F -> fp32).
    4. un-permute: ``w[:, argsort(perm)]``.

    Difference from the original (a superset, same result where the original works): the original chooses
    the second-order path for BOTH statistics by testing only ``quant_layer_scale_qq_scale``; here scales and
    zeros are decided independently (the original raises IndexError when only scales are second-order).
    """
    d = save_quant_dict
    m, n = d["weight_shape"]
    groupsize = d["groupsize"]
    usable = n - d["keep_last_columns"]
    out = torch.zeros(d["weight_shape"])  # fp32
    codes = d["quant_weights"].cpu()

    def stat(codes_key: str, s_key: str, z_key: str, g: int) -> torch.Tensor:
        if d[s_key]:
            return _dq(d[codes_key][g].cpu(), d[s_key][g].cpu(), d[z_key][g].cpu())
        return d[codes_key][g].cpu()

    for g, c0 in enumerate(range(0, usable, groupsize)):
        c1 = min(c0 + groupsize, usable)
        zero = stat("quant_layer_zeros", "quant_layer_zero_qq_scale", "quant_layer_zero_qq_zero", g)
        scale = stat("quant_layer_scale", "quant_layer_scale_qq_scale", "quant_layer_scale_qq_zero", g)
        out[:, c0:c1] = _dq(codes[:, c0:c1], scale.reshape(-1, 1), zero.reshape(-1, 1))

    outliers = d["outliers_matrix"].to_dense().cpu()
    out = out * (outliers == 0) + outliers
    return out[:, torch.argsort(d["perm"].cpu())]


# ---------------------------------------------------------------------------------------------
# main.py --save layout
# ---------------------------------------------------------------------------------------------


def default_legacy_args(**overrides) -> dict:
    """``vars(args)`` of ``main.py`` for the repository's ``script.sh`` command (3-bit, 16x16, act_order,
    percdamp 1e0, outlier_threshold 0.2, nsamples 128, --perchannel), in argparse definition order.
    Keys not in the parser (e.g. ``exp_name``, added with ``--wandb``) may be passed as overrides too."""
    args = {
        "model_path": "meta-llama/Llama-2-7b-hf",
        "dataset": "pajama",
        "custom_data_path": None,
        "load": None,
        "save": False,  # argparse default; save_legacy_model sets the output directory string
        "seed": 0,
        "nsamples": 128,
        "percdamp": 1.0,
        "nearest": False,
        "wbits": 3,
        "groupsize": 16,
        "permutation_order": "act_order",
        "true_sequential": False,  # from --true-sequential
        "new_eval": False,
        "sym": False,
        "perchannel": True,
        "qq_scale_bits": 3,
        "round_zero": None,  # type=int, default None
        "qq_zero_bits": 3,
        "qq_zero_sym": False,
        "qq_groupsize": 16,
        "outlier_threshold": 0.2,
        "simplified_outliers": False,
        "wandb": False,
        "skip_out_loss": False,
        "offload_activations": False,
        "dtype": "auto",
    }
    args.update(overrides)
    return args


@contextlib.contextmanager
def _storages_tagged_as(location: str):
    """Make torch.save record every storage's location as ``location`` (e.g. "cuda:0"), as files written
    by a GPU run of main.py are. Loading them then needs ``map_location="cpu"`` on a CPU-only machine,
    exactly like real legacy files. Uses torch.serialization's tagger registry temporarily."""
    from torch import serialization as ser

    registry = getattr(ser, "_package_registry", None)
    if registry is None:  # pragma: no cover - torch internals changed
        raise NotImplementedError("this torch version has no torch.serialization._package_registry")
    entry = (-(10**9), lambda storage: location, lambda storage, loc: None)
    registry.insert(0, entry)
    try:
        yield
    finally:
        registry.remove(entry)


def save_legacy_model(
    model_dir_out: Union[str, os.PathLike],
    layers: Mapping[int, Mapping[str, dict]],
    not_quantized: Mapping[str, torch.Tensor],
    args: Optional[Mapping] = None,
    *,
    emulate_cuda_location: bool = False,
    as_parameters: bool = True,
) -> Path:
    """Write a legacy SpQR directory the way ``main.py --save DIR`` does.

    * ``DIR/<block_idx>/<sublayer_name>`` (no extension; name as in ``block.named_modules()``, e.g.
      ``self_attn.q_proj``, ``mlp.down_proj``): ``torch.save`` of the save_quant_dict, with
      ``"sublayer_name"`` set to that name (main.py sets it just before saving).
    * ``DIR/args.pt``: ``torch.save`` of a plain dict = :func:`default_legacy_args` updated with ``args``;
      ``"save"`` defaults to ``str(DIR)`` (the --save string) unless ``args`` gives it.
    * ``DIR/not_quantized_weights.pt``: ``{full parameter name: tensor}``, e.g. ``model.embed_tokens.weight``,
      ``model.layers.0.input_layernorm.weight``, ``model.norm.weight``, ``lm_head.weight``. The original saves
      ``model.named_parameters()`` entries, i.e. ``nn.Parameter`` objects with requires_grad=True; that is
      reproduced when ``as_parameters`` (default).
    * ``emulate_cuda_location``: record storages as ``cuda:0`` as a GPU run does (default: ``cpu``).
    """
    root = Path(model_dir_out)
    root.mkdir(parents=True, exist_ok=True)
    full_args = default_legacy_args(save=str(model_dir_out))
    full_args.update(dict(args or {}))

    nq = {}
    for name, t in not_quantized.items():
        t = t.detach().cpu()
        nq[name] = torch.nn.Parameter(t, requires_grad=t.is_floating_point()) if as_parameters else t

    ctx = _storages_tagged_as("cuda:0") if emulate_cuda_location else contextlib.nullcontext()
    with ctx:
        for block_idx in sorted(layers):
            block_dir = root / str(int(block_idx))
            block_dir.mkdir(parents=True, exist_ok=True)
            for sublayer_name, qd in layers[block_idx].items():
                qd = dict(qd)
                qd["sublayer_name"] = sublayer_name
                torch.save(qd, block_dir / sublayer_name)
        torch.save(full_args, root / "args.pt")
        torch.save(nq, root / "not_quantized_weights.pt")
    return root


# ---------------------------------------------------------------------------------------------
# Hessians for tests
# ---------------------------------------------------------------------------------------------


def accumulate_hessian(batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """``SPQRUtil.add_batch`` over the given layer inputs (each ``[seq, n]`` or ``[batch, seq, n]``):
    running average H = (2 / #sequences) * sum over all tokens of x x^T, in fp32."""
    H = None
    nsamples = 0
    for inp in batches:
        if inp.ndim == 2:
            inp = inp.unsqueeze(0)
        count = inp.shape[0]
        x = inp.reshape(-1, inp.shape[-1]).t()
        if H is None:
            H = torch.zeros(x.shape[0], x.shape[0])
        H *= nsamples / (nsamples + count)
        nsamples += count
        x = math.sqrt(2 / nsamples) * x.float()
        H += x.matmul(x.t())
    if H is None:
        raise ValueError("no batches")
    return H


def random_hessian(
    n: int,
    seed: int = 0,
    *,
    nsamples: int = 8,
    seqlen: int = 32,
    heavy_columns: int = 3,
    heavy_factor: float = 8.0,
    dead_columns: int = 1,
) -> torch.Tensor:
    """A realistic fp32 ``[n, n]`` PSD Hessian proxy built like the original does it: ``nsamples`` random
    "sequences" of ``seqlen`` correlated activations fed through :func:`accumulate_hessian`. A few input
    features are scaled up by ``heavy_factor`` (LLM-style outlier features, so act_order is non-trivial),
    and ``dead_columns`` features are exactly zero (diag(H) == 0, exercising the dead-column path)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(n) + 0.3 * torch.randn(n, n, generator=g) / math.sqrt(n)
    feature_scale = torch.exp(0.5 * torch.randn(n, generator=g))
    perm = torch.randperm(n, generator=g)
    heavy = perm[:heavy_columns]
    dead = perm[heavy_columns : heavy_columns + dead_columns]
    feature_scale[heavy] *= heavy_factor
    feature_scale[dead] = 0.0
    batches = []
    for _ in range(nsamples):
        z = torch.randn(seqlen, n, generator=g)
        batches.append((z @ mix) * feature_scale)
    return accumulate_hessian(batches)
