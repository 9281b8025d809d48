"""Self-test of the SpQR legacy fixture generator (tests/spqr_legacy.py). CPU only, small shapes."""

from __future__ import annotations

import math
import zipfile

import pytest
import torch

from spqr_legacy import (
    SAVE_QUANT_DICT_KEYS,
    default_legacy_args,
    dequantize_legacy,
    quantize_layer_legacy,
    quantize_layer_legacy_full,
    random_hessian,
    save_legacy_model,
)

STAT_KEYS = SAVE_QUANT_DICT_KEYS[1:7]


def _weight(m: int, n: int, seed: int, outliers=()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = 0.02 * torch.randn(m, n, generator=g)
    for r, c, v in outliers:
        w[r, c] = v
    return w.to(torch.float16)  # a LLaMA layer is fp16


def _check_structure(d: dict, m: int, n: int, *, wbits=3, groupsize=16, qq=16, qq_bits=3):
    assert tuple(d) == SAVE_QUANT_DICT_KEYS[:-1]  # sublayer_name only added at save time
    G = math.ceil(n / groupsize)
    assert d["quant_weights"].dtype == torch.int8 and d["quant_weights"].shape == (m, n)
    assert int(d["quant_weights"].min()) >= 0 and int(d["quant_weights"].max()) < 2**wbits
    for k in STAT_KEYS:
        assert isinstance(d[k], list) and len(d[k]) == G, k
    for k in ("quant_layer_scale", "quant_layer_zeros"):
        for t in d[k]:
            assert t.dtype == torch.int8 and t.shape == (m // qq, qq)
            assert int(t.min()) >= 0 and int(t.max()) < 2**qq_bits
    for k in STAT_KEYS[2:]:
        for t in d[k]:
            assert t.dtype == torch.float16 and t.shape == (m // qq, 1)
    assert d["save_float_dtype"] is torch.float16
    om = d["outliers_matrix"]
    assert om.layout == torch.sparse_coo and om.dtype == torch.float16 and om.shape == (m, n)
    assert d["perm"].dtype == torch.int32 and sorted(d["perm"].tolist()) == list(range(n))
    assert d["keep_last_columns"] == 0 and d["blocksize"] == 128 and d["groupsize"] == groupsize
    assert isinstance(d["weight_shape"], torch.Size) and d["weight_shape"] == (m, n)


@pytest.mark.parametrize(
    "m,n,order,outliers",
    [
        (64, 48, "act_order", [(5, 7, 0.9), (40, 30, -1.1)]),
        (32, 64, "identity", [(3, 50, 1.0)]),
    ],
)
def test_quantize_structure_reconstruction_and_outliers(m, n, order, outliers):
    w = _weight(m, n, seed=m + n, outliers=outliers)
    H = random_hessian(n, seed=n)
    res = quantize_layer_legacy_full(w, H, permutation_order=order)
    d = res.save_quant_dict
    _check_structure(d, m, n)

    perm = d["perm"].long()
    if order == "act_order":
        assert torch.equal(perm, torch.argsort(torch.diag(H), descending=True))
    else:
        assert torch.equal(perm, torch.arange(n))

    rec = dequantize_legacy(d)
    assert rec.dtype == torch.float32 and rec.shape == (m, n)
    # the saved form reproduces the GPTQ output up to fp16 storage of the second-order stats
    assert (rec - res.weight).abs().max() < 2e-3
    # and approximates the original weight (3-bit, 16x16 groups, outliers kept)
    wf = w.float()
    assert (rec - wf).norm() / wf.norm() < 0.3
    inlier = torch.ones_like(wf, dtype=torch.bool)
    for r, c, v in outliers:
        inlier[r, c] = False
    assert (rec - wf)[inlier].abs().max() < 0.1

    # injected outliers are found, stored (permuted columns) with their GPTQ-updated value
    invperm = torch.argsort(perm)
    dense = d["outliers_matrix"].to_dense().float()
    mask_orig = (dense != 0)[:, invperm]
    assert torch.equal(mask_orig, res.unstructured_outlier_mask[:, invperm])
    assert 0 < int(mask_orig.sum()) <= 0.05 * m * n
    for r, c, v in outliers:
        assert mask_orig[r, c]
        assert abs(dense[r, invperm[c]].item() - v) < 0.1 * abs(v)
        assert abs(rec[r, c].item() - v) < 0.1 * abs(v)

    # at outlier positions the code is quantize(0) = clamp(round(zero), 0, maxq) of that row/group
    rows, cols = torch.nonzero(dense != 0, as_tuple=True)
    for r, c in zip(rows.tolist(), cols.tolist()):
        g = c // d["groupsize"]
        z = d["quant_layer_zero_qq_scale"][g].float() * (
            d["quant_layer_zeros"][g].float() - d["quant_layer_zero_qq_zero"][g].float()
        )
        expect = int(torch.clamp(torch.round(z.reshape(-1)[r]), 0, 7))
        assert int(d["quant_weights"][r, c]) == expect


def test_no_outliers_with_infinite_threshold():
    for m, n in ((64, 48), (32, 64)):
        w = _weight(m, n, seed=1, outliers=[(1, 2, 1.0)])
        d = quantize_layer_legacy(w, random_hessian(n, seed=2), outlier_relative_threshold=float("inf"))
        _check_structure(d, m, n)
        assert d["outliers_matrix"]._nnz() == 0


def test_dead_column_and_variants():
    m, n = 32, 48
    H = random_hessian(n, seed=3)
    dead = int(torch.nonzero(torch.diag(H) == 0).item())
    w = _weight(m, n, seed=3)
    res = quantize_layer_legacy_full(w, H)
    # dead input features are zeroed before quantization; act_order puts them last
    assert int(res.perm[-1]) == dead
    assert res.weight[:, dead].abs().max() < 1e-2

    # simplified outliers and first-order-only statistics (fp16 [m, 1] lists, empty qq lists)
    d = quantize_layer_legacy(w, H, simplified_outliers=True, qq_scale_bits=None, qq_zero_bits=None)
    for k in ("quant_layer_scale", "quant_layer_zeros"):
        assert all(t.dtype == torch.float16 and t.shape == (m, 1) for t in d[k])
    assert all(d[k] == [] for k in STAT_KEYS[2:])
    assert (dequantize_legacy(d) - w.float()).norm() / w.float().norm() < 0.3

    # 4-bit, bf16 save dtype from the layer dtype (save_float_dtype=None)
    d = quantize_layer_legacy(w.to(torch.bfloat16), H, wbits=4, save_float_dtype=None)
    assert d["save_float_dtype"] is torch.bfloat16 and d["outliers_matrix"].dtype == torch.bfloat16
    assert int(d["quant_weights"].max()) < 16


@pytest.mark.parametrize("emulate_cuda", [False, True])
def test_save_layout(tmp_path, emulate_cuda):
    H = random_hessian(48, seed=4)
    layers = {
        0: {"self_attn.q_proj": quantize_layer_legacy(_weight(32, 48, 5), H)},
        1: {"mlp.down_proj": quantize_layer_legacy(_weight(64, 48, 6, [(0, 0, 1.0)]), H)},
    }
    nq = {"model.embed_tokens.weight": torch.randn(10, 48).half(), "model.norm.weight": torch.ones(48).half()}
    out = tmp_path / "legacy"
    save_legacy_model(out, layers, nq, {"nsamples": 8}, emulate_cuda_location=emulate_cuda)

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "0/self_attn.q_proj",
        "1/mlp.down_proj",
        "args.pt",
        "not_quantized_weights.pt",
    ]
    loaded = torch.load(out / "1" / "mlp.down_proj", map_location="cpu", weights_only=True)
    assert tuple(loaded) == SAVE_QUANT_DICT_KEYS and loaded["sublayer_name"] == "mlp.down_proj"
    assert "sublayer_name" not in layers[1]["mlp.down_proj"]  # caller's dict untouched
    assert torch.equal(dequantize_legacy(loaded), dequantize_legacy(layers[1]["mlp.down_proj"]))

    args = torch.load(out / "args.pt", weights_only=True)
    assert args == default_legacy_args(save=str(out), nsamples=8)
    for k in ("wbits", "groupsize", "qq_scale_bits", "qq_zero_bits", "qq_groupsize", "outlier_threshold",
              "permutation_order", "percdamp", "nsamples", "perchannel", "round_zero", "sym"):
        assert k in args

    nql = torch.load(out / "not_quantized_weights.pt", map_location="cpu", weights_only=True)
    assert set(nql) == set(nq) and all(isinstance(v, torch.nn.Parameter) for v in nql.values())
    assert torch.equal(nql["model.norm.weight"], nq["model.norm.weight"])

    with zipfile.ZipFile(out / "0" / "self_attn.q_proj") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert (b"cuda:0" in pkl) == emulate_cuda and (b"cpu" in pkl) != emulate_cuda
