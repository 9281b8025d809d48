"""torch.compile over a model loaded from a compressed checkpoint: every compressed layer
is one custom op (`torch.ops.ctcodec.*`), so the whole forward is one graph (no break),
with the layers dispatched as they are on CUDA (the kernels' layout, `kernel_linear`),
and the compiled model computes the eager model's logits bit for bit."""

from __future__ import annotations

import pytest
import torch

import ctcodec
from ctcodec.inference import load_model

OPS = {"kernel": "ctcodec.kernel_linear", "pack": "ctcodec.pack_linear"}


def _graphs(model, ids):
    """The FX graphs dynamo hands a backend (aot_eager runs them: same aten ops as eager)."""
    from torch._dynamo.backends.common import aot_autograd  # noqa: F401  (aot_eager's home)

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        return compiled(ids).logits, graphs


def _assert_one_graph_of(model, ids, op: str) -> None:
    """0 graph breaks, one graph whose 14 ctcodec ops (2 layers × 7 Linear) are all `op`,
    and the compiled logits equal to eager's bit for bit."""
    with torch.no_grad():
        eager = model(ids).logits
    explained = torch._dynamo.explain(model)(ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    logits, graphs = _graphs(model, ids)
    assert len(graphs) == 1
    calls = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function" and "ctcodec." in str(n.target)]
    assert len(calls) == 14 and all(op in c for c in calls), calls
    assert torch.equal(logits, eager)


@pytest.mark.parametrize("layout", ["kernel", "pack"])
def test_a_compressed_model_compiles_to_one_graph_of_custom_ops(tiny, tmp_path, layout):
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(tiny, out, scheme="W4A16_ASYM", group_size=32, rotate="hadamard",
                                online_rotation=True)  # R4's online hook traces too
    model = load_model(out, dtype=torch.float32, kernel_layout=layout == "kernel")
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    _assert_one_graph_of(model, ids, OPS[layout])


def test_kernel_layout_replaces_the_checkpoint_tensors(tiny, tmp_path):
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(tiny, out, scheme="W4A16", group_size=32)
    plain = load_model(out, dtype=torch.float32)
    prepared = load_model(out, dtype=torch.float32, kernel_layout=True)
    q_plain = plain.model.layers[0].self_attn.q_proj
    q_prepared = prepared.model.layers[0].self_attn.q_proj
    assert set(q_plain.parts()) >= {"weight_packed", "weight_scale"} and not q_plain.kernel_layout
    assert set(q_prepared.parts()) == {"qweight", "scales", "x_order"} and q_prepared.kernel_layout
    assert torch.equal(q_plain.dequantize(), q_prepared.dequantize())
    ids = torch.randint(0, 1000, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, prepared(ids).logits)


def test_a_spqr_model_compiles_to_one_graph_of_spqr_ops(tiny, tmp_path):
    from ctcodec.calibrate import compress_calibrated
    from ctcodec.spqr_format import SpqrParams

    from tiny_models import calib_file

    out = tmp_path / "s"
    compress_calibrated(tiny, out, algorithm="spqr", spqr_params=SpqrParams(bits=3, beta1=16, beta2=16),
                        calib=calib_file(tmp_path), nsamples=4, seqlen=32)
    model = load_model(out, dtype=torch.float32, kernel_layout=True)  # SpQR off CUDA: nothing to prepare
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(2))
    _assert_one_graph_of(model, ids, "ctcodec.spqr_linear")


def test_load_model_compile_decodes_as_eager_does(tiny, tmp_path):
    # load_model(compile=True): static cache, forward compiled whole by inductor ("default"
    # mode off CUDA). Greedy decoding gives eager's tokens; the forward stays one graph
    # (fullgraph would raise on a break) with the ops inside.
    out = tmp_path / "q"
    ctcodec.compress_checkpoint(tiny, out, scheme="W4A16", group_size=32)
    eager = load_model(out, dtype=torch.float32, kernel_layout=True)
    torch._dynamo.reset()
    compiled = load_model(out, dtype=torch.float32, kernel_layout=True, compile=True)
    assert compiled.generation_config.cache_implementation == "static"
    assert compiled.generation_config.disable_compile  # transformers' compile of CUDA decode steps is off
    eager.generation_config.cache_implementation = "static"
    ids = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(2))
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0, output_logits=True,
              return_dict_in_generate=True)
    with torch.no_grad():
        want = eager.generate(ids, **kw)
        from torch._dynamo.utils import counters

        counters.clear()
        got = compiled.generate(ids, **kw)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # it ran compiled
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # inductor may sum in another order
    with pytest.raises(ValueError, match="inductor"):
        ctcodec.compile_for_decoding(eager, mode="reduce-overhead", backend="aot_eager")
