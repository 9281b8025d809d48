"""GPTQ, SparseGPT and SpQR: the solvers' properties on real-shaped problems, exact
agreement between what a solver optimised and what the decoders produce, and the
whole calibrated pipeline on tiny models (interop with compressed-tensors 0.20)."""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

import ctcodec
from ctcodec import CodecError
from ctcodec.calibrate import compress_calibrated, export, gptq, spqr
from ctcodec.calibrate.int_quantizer import IntQuantizer
from ctcodec.spqr_format import SpqrParams

from spqr_files import write_folder
from tiny_models import calib_file
from spqr_legacy import random_hessian


def activations(n: int, seed: int, tokens: int = 1024) -> torch.Tensor:
    """Correlated inputs with a few heavy channels, like a transformer's."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=g) / n ** 0.5
    x = torch.randn(tokens, n, generator=g) @ mix + 0.1 * torch.randn(tokens, n, generator=g)
    x[:, : max(n // 16, 1)] *= 8
    return x


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.T @ x / len(x)


def output_error(x, w, w_hat):
    return ((x @ (w - w_hat).T) ** 2).mean().item()


def rtn(w: torch.Tensor, q: IntQuantizer) -> torch.Tensor:
    out = torch.empty_like(w)
    gs = q.group_size or w.shape[1]
    for c in range(0, w.shape[1], gs):
        s, z = q.params(w[:, c:c + gs])
        out[:, c:c + gs] = q.dequantize(q.codes(w[:, c:c + gs], s[:, None], z[:, None]), s[:, None], z[:, None])
    return out


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), bits=st.sampled_from([3, 4, 8]), sym=st.booleans(),
       group=st.sampled_from([16, 32, None]), act_order=st.booleans(), static=st.booleans())
def test_gptq_lowers_layer_output_error_below_rtn(seed, bits, sym, group, act_order, static):
    m, n = 48, 64
    w = (torch.randn(m, n, generator=torch.Generator().manual_seed(seed)) * 0.05).to(torch.bfloat16).float()
    x = activations(n, seed)
    q = IntQuantizer(bits, sym, group, torch.bfloat16)
    r = gptq.solve(w, hessian(x), q, act_order=act_order, static_groups=static)
    assert output_error(x, w, r.weight) < output_error(x, w, rtn(w, q))
    assert r.codes.min() >= q.qmin and r.codes.max() <= q.qmax
    assert (r.g_idx is not None) == (act_order and group is not None and not static)



@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 8]), sym=st.booleans(),
       rows=st.integers(1, 24), cols=st.integers(1, 64), tails=st.floats(0.0, 3.0), weighted=st.booleans())
def test_mse_observer_never_quantizes_a_row_worse_than_minmax(seed, bits, sym, rows, cols, tails, weighted):
    """The MSE observer tries the min/max range first and keeps a shrunk one only where
    it lowers that row's Σ wⱼ|error|^2.4 (w: GPTQ's column weights, or 1); its scales
    are still values of the weight dtype and its codes in range."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * 0.05 + tails * 0.02 * torch.randn(rows, cols, generator=g).pow(3)
    x = x.to(torch.bfloat16).float()
    w = torch.rand(cols, generator=g) * 10 + 0.01 if weighted else None
    minmax = IntQuantizer(bits, sym, None, torch.bfloat16)
    mse = IntQuantizer(bits, sym, None, torch.bfloat16, observer="mse")

    def error(q):
        s, z = q.params(x, w)
        codes = q.codes(x, s[:, None], z[:, None])
        assert codes.min() >= q.qmin and codes.max() <= q.qmax
        assert torch.equal(s, s.to(torch.bfloat16).float())
        err = (q.dequantize(codes, s[:, None], z[:, None]) - x).abs().pow(2.4)
        return (err if w is None else err * w).sum(1)

    assert (error(mse) <= error(minmax)).all()


def test_mse_observer_clips_gaussian_rows():
    """Gaussian rows of 64 quantize best with their extremes clipped a little at 4 bits:
    the observer shrinks most rows' ranges, and lowers the total error."""
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    mse, minmax = (IntQuantizer(4, True, None, torch.float32, observer=o) for o in ("mse", "minmax"))
    assert (mse.params(x)[0] < minmax.params(x)[0]).float().mean() > 0.5
    q = IntQuantizer(4, True, None, torch.float32, observer="percentile")
    with pytest.raises(ValueError, match="observer"):
        q.params(x)

def _gptq_file(tmp_path, r, q, m, n):
    from ctcodec import quant_plan

    plan = quant_plan.plan("W4A16" if q.num_bits == 4 else f"W{q.num_bits}A16", q.group_size or -1, None,
                             ["Linear"], [], None)
    if not q.symmetric:
        for g in plan.groups.values():
            g["weights"]["symmetric"] = False
    plan.encodings([("m.proj.weight", "BF16", [m, n])])
    tensors = export.pack_quantized("m.proj", r, q.num_bits, q.symmetric, q.dtype)
    ctcodec._native.write_tensors(str(tmp_path / "model.safetensors"), tensors, [False] * len(tensors))
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": plan.config()}))
    return dict(ctcodec.decompress_file(tmp_path))["m.proj.weight"]


@pytest.mark.parametrize("bits,sym,group,act_order,static", [
    (4, True, 16, True, False), (4, False, 32, True, False), (4, False, 32, True, True), (3, False, 16, False, False),
    (8, True, None, False, False), (4, False, None, True, False)])
def test_gptq_checkpoint_decodes_to_the_solved_weight(tmp_path, bits, sym, group, act_order, static):
    m, n = 40, 64
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(bits)) * 0.05
    q = IntQuantizer(bits, sym, group, torch.bfloat16)
    r = gptq.solve(w, hessian(activations(n, 1)), q, act_order=act_order, static_groups=static)
    got = _gptq_file(tmp_path, r, q, m, n)
    assert torch.equal(got, r.weight.to(torch.bfloat16))


@pytest.mark.parametrize("prune", ["2:4", 0.5, 0.3])
@pytest.mark.parametrize("quantize", [False, True])
def test_sparsegpt_prunes_exactly_and_beats_magnitude_pruning(prune, quantize):
    m, n = 32, 128
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(3)) * 0.05
    x = activations(n, 3)
    q = IntQuantizer(4, True, 32, torch.bfloat16) if quantize else None
    kw = {"prune_n": 2, "prune_m": 4} if prune == "2:4" else {"sparsity": prune}
    r = gptq.solve(w, hessian(x), q, **kw)
    zero = r.weight == 0
    if prune == "2:4":
        assert (zero.reshape(m, -1, 4).sum(-1) >= 2).all()
    else:
        assert int(zero.sum()) >= int(m * n * prune)
    assert r.pruned == (m * n // 2 if prune == "2:4" else int(m * n * prune))  # one block of 128 columns
    # Magnitude pruning to the same mask size, without error compensation.
    k = int(zero.sum())
    thresh = w.abs().flatten().kthvalue(k).values
    magnitude = torch.where(w.abs() <= thresh, torch.zeros_like(w), w)
    if prune == "2:4":
        keep = w.abs().reshape(m, -1, 4).topk(2, dim=-1).indices
        magnitude = torch.zeros_like(w).reshape(m, -1, 4).scatter(-1, keep, w.reshape(m, -1, 4).gather(-1, keep)).reshape(m, n)
    assert output_error(x, w, r.weight) < output_error(x, w, magnitude)


def _spqr_folder(tmp_path, r, params, m, n):
    out = {"codes": r.codes.numpy(), "scale_codes": r.scale_codes.numpy(), "zero_codes": r.zero_codes.numpy(),
           "second_order": r.second_order.numpy(), "perm": r.perm.numpy(), "outlier_rows": r.outlier_rows.numpy(),
           "outlier_cols": r.outlier_cols.numpy(), "outlier_values": r.outlier_values.numpy()}
    return dict(ctcodec.decompress_file(write_folder(tmp_path, params, {"m": out})))["m.weight"]


@pytest.mark.parametrize("bits,beta,layout,dtype", [(3, 16, "csr", "bfloat16"), (4, 16, "ptcsr", "float16"),
                                                    (2, 8, "csr", "float32"), (3, 16, "ptcsr", "bfloat16")])
def test_spqr_checkpoint_decodes_to_exactly_what_the_solver_optimised(tmp_path, bits, beta, layout, dtype):
    m, n = 48, 80  # n not a multiple of 32; last group full, tiles of 16 rows
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(bits)) * 0.05
    w[5, 7] = 1.5  # an outlier
    params = SpqrParams(bits, beta, beta, 3, 3, dtype, layout)
    r = spqr.solve(w, random_hessian(n, seed=bits), params, outlier_threshold=0.2)
    got = _spqr_folder(tmp_path, r, params, m, n)
    assert torch.equal(got, r.weight.to(got.dtype))
    assert len(r.outlier_rows) > 0
    # Outliers replace the dense value: the decoded weight there is the stored fp16 value.
    perm = r.perm.long()
    rows, cols = r.outlier_rows.long(), perm[r.outlier_cols.long()]
    assert torch.equal(got[rows, cols], r.outlier_values.to(got.dtype))
    assert (rows == 5).logical_and(cols == 7).any(), "the planted outlier is kept in fp16"


def test_spqr_without_outliers_and_its_average_bits():
    m, n = 32, 64
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(0)) * 0.05
    params = SpqrParams()
    r = spqr.solve(w, random_hessian(n), params, outlier_threshold=float("inf"))
    assert len(r.outlier_rows) == 0
    assert params.average_bits(0.0) == pytest.approx(3.625)
    assert SpqrParams(bits=4).average_bits(0.01) == pytest.approx(4.625 + 0.32)
    x = activations(n, 0)
    r = spqr.solve(w, hessian(x), params, outlier_threshold=float("inf"))
    # 3-bit groups of 16 with 3-bit statistics: well under the error of plain 3-bit RTN per channel.
    assert output_error(x, w, r.weight) < output_error(x, w, rtn(w, IntQuantizer(3, False, None, torch.float32)))


def test_spqr_is_no_worse_than_the_original_algorithm():
    """Same problem through our solver and a faithful re-implementation of the original
    SpQR code (tests/spqr_legacy.py): our fp16-consistent statistics cost nothing."""
    from spqr_legacy import dequantize_legacy, quantize_layer_legacy

    m, n = 64, 96
    x = activations(n, 7)
    H = hessian(x)
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(7)) * 0.05
    ours = spqr.solve(w, H, SpqrParams(dtype="float32"), outlier_threshold=0.2).weight
    legacy = dequantize_legacy(quantize_layer_legacy(w, H, outlier_relative_threshold=0.2))
    assert output_error(x, w, ours) <= 1.05 * output_error(x, w, legacy)


# --- the whole pipeline on a tiny model --------------------------------------------




@pytest.mark.parametrize("actorder,version", [("weight", "0.20.0"), ("group", "0.17.1")])
def test_gptq_pipeline_writes_a_checkpoint_compressed_tensors_reads(tiny, tmp_path, actorder, version):
    """Act order as each compressed-tensors release accepts it: 0.20 static groups, and
    groups in activation order with weight_g_idx (dropped in 0.20) for 0.17."""
    from ct_current import run_ct
    from pathlib import Path

    out = tmp_path / "gptq"
    s = compress_calibrated(tiny, out, scheme="W4A16_ASYM", group_size=32, act_order=True, actorder=actorder,
                            calib=calib_file(tmp_path), nsamples=4, seqlen=32)
    assert s["weights"] == 14
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    (group,) = qc["config_groups"].values()
    assert group["weights"]["actorder"] == actorder and qc["format"] == "pack-quantized"
    names = [n for n, _d, _s in ctcodec._native.read_header(str(out / "model.safetensors"))[1]]
    assert any(n.endswith("weight_g_idx") for n in names) == (actorder == "group")
    ours = dict(ctcodec.decompress_file(out))
    ref = tmp_path / "ct"
    run_ct(str(Path(__file__).parent / "ct_dequantize.py"), str(out), str(ref), version=version)
    from safetensors.torch import load_file

    theirs = load_file(ref / "model.safetensors")
    for name, t in theirs.items():
        assert torch.equal(ours[name], t), name


def test_sparsegpt_pipeline_2of4_stacked_and_alone(tiny, tmp_path):
    calib = calib_file(tmp_path)
    s = compress_calibrated(tiny, tmp_path / "a", algorithm="sparsegpt", sparsity="2:4", scheme="W4A16",
                            group_size=32, calib=calib, nsamples=4, seqlen=32)
    qc = json.loads((tmp_path / "a" / "config.json").read_text())["quantization_config"]
    assert qc["sparsity_config"]["sparsity_structure"] == "2:4" and s["pruned_fraction"] == pytest.approx(0.5)
    for name, t in ctcodec.decompress_file(tmp_path / "a"):
        if name.endswith("proj.weight"):
            assert ((t == 0).reshape(t.shape[0], -1, 4).sum(-1) >= 2).all(), name
    s = compress_calibrated(tiny, tmp_path / "b", algorithm="sparsegpt", sparsity="2:4", calib=calib, nsamples=4,
                            seqlen=32)
    assert s["format"] == "sparse-24-bitmask"
    assert ctcodec.inspect_checkpoint(tmp_path / "b")["format"] == "sparse-24-bitmask"


def test_spqr_pipeline_and_cli(tiny, tmp_path):
    from ctcodec.cli import main

    calib = calib_file(tmp_path)
    rc = main(["compress", str(tiny), str(tmp_path / "s"), "--spqr", "--wbits", "3", "--groupsize", "16",
               "--qq-scale-bits", "3", "--qq-zero-bits", "3", "--qq-groupsize", "16", "--outlier-threshold", "0.2",
               "--permutation-order", "act_order", "--percdamp", "1.0", "--calib", calib, "--nsamples", "4",
               "--seqlen", "32", "-q"])
    assert rc == 0
    qc = json.loads((tmp_path / "s" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "spqr" and qc["bits"] == 3 and 3.6 < qc["average_bits"] < 5
    dense = dict(ctcodec.decompress_file(tiny))
    got = dict(ctcodec.decompress_file(tmp_path / "s"))
    assert set(got) == set(dense)
    w = "model.layers.0.mlp.down_proj.weight"
    rel = ((got[w].float() - dense[w].float()).norm() / dense[w].float().norm()).item()
    assert rel < 0.25, rel


def test_calibrated_compression_refuses_bad_requests(tiny, tmp_path):
    with pytest.raises(CodecError, match="needs a scheme"):
        compress_calibrated(tiny, tmp_path / "x")
    with pytest.raises(CodecError, match="integer pack-quantized"):
        compress_calibrated(tiny, tmp_path / "x", scheme="FP8_DYNAMIC")
    with pytest.raises(CodecError, match="sparsity"):
        compress_calibrated(tiny, tmp_path / "x", algorithm="sparsegpt")
    with pytest.raises(CodecError, match="cannot read text"):
        compress_calibrated(tiny, tmp_path / "x", scheme="W4A16", group_size=32, calib=str(tmp_path / "missing.txt"))
    assert not (tmp_path / "x").exists()


def test_models_that_pick_masks_by_layer_type_calibrate(cache_dir, tmp_path):
    """Qwen2 (like Gemma and others) reads each layer's `attention_type`; with a sliding
    window on some layers, each layer must be calibrated with its own kind of mask."""
    from ctcodec.calibrate import engine
    from ctcodec.calibrate.layerwise import LayerwiseModel
    from tiny_models import tiny_qwen2

    src = tiny_qwen2(cache_dir)
    lw = LayerwiseModel(src)
    assert len(set(engine.layer_types(lw))) == 2
    ids = torch.randint(0, 1000, (2, 24))
    masks = {t: engine.capture_inputs(lw, ids, attention_type=t)[0][2].get("attention_mask")
             for t in set(engine.layer_types(lw))}
    a, b = masks.values()
    assert a is None or b is None or not torch.equal(a, b), "full and sliding layers get different masks"
    s = compress_calibrated(src, tmp_path / "q", scheme="W4A16", group_size=32, calib=calib_file(tmp_path),
                            nsamples=4, seqlen=32)
    assert s["weights"] == 14
    got = dict(ctcodec.decompress_file(tmp_path / "q"))
    assert got["model.layers.1.mlp.down_proj.weight"].shape == (64, 96)


def test_two_four_pruning_refuses_activation_order(tiny, tmp_path):
    with pytest.raises(CodecError, match="activation order"):
        compress_calibrated(tiny, tmp_path / "x", algorithm="sparsegpt", sparsity="2:4", act_order=True)


def test_layers_fed_one_input_share_its_statistics_bit_for_bit(tiny, monkeypatch):
    """q/k/v (and gate/up) read the same tensor: its Σ x xᵀ is computed once per batch
    and is exactly what each layer would have accumulated alone."""
    from ctcodec.calibrate import engine, hessian
    from ctcodec.calibrate.layerwise import LayerwiseModel

    lw = LayerwiseModel(tiny)
    ids = torch.randint(0, lw.config.vocab_size, (8, 16), generator=torch.Generator().manual_seed(1))
    batches = engine.capture_inputs(lw, ids, batch=2)
    layer = lw.load_layer(0).float()
    linears = engine.linears_of(layer, f"{lw.prefix}.0")
    calls = []
    real = hessian.gram
    monkeypatch.setattr(hessian, "gram", lambda inp: calls.append(inp.shape) or real(inp))
    with engine.one_thread():
        shared = engine.block_statistics(layer, linears, batches)
    # One Gram per distinct input per batch: attention in, o_proj in, mlp in, down_proj in.
    assert len(calls) == 4 * len(batches)
    inputs: dict[str, list] = {n: [] for n in linears}
    hooks = [m.register_forward_hook(lambda _m, inp, _o, n=n: inputs[n].append(inp[0].clone()))
             for n, m in linears.items()]
    with torch.no_grad():
        for h, args, kw in batches:
            layer(h, *args, **kw)
    for hook in hooks:
        hook.remove()
    with engine.one_thread():
        for n in linears:
            for b, block in enumerate(shared[n]):
                alone = torch.zeros_like(block.S)
                for x in inputs[n][b * engine.BATCHES_PER_BLOCK:(b + 1) * engine.BATCHES_PER_BLOCK]:
                    alone += real(x)
                assert torch.equal(block.S, alone), n
    q, k = (shared[f"{lw.prefix}.0.self_attn.{p}_proj"][0].S for p in "qk")
    assert torch.equal(q, k)
