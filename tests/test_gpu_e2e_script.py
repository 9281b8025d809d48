"""benches/gpu_e2e_7b.py is run on a GPU only when a session is lent one: here its code
runs on a small model on the CPU (exact fallbacks, the compiled flow with the eager
backend), so the GPU run does not fail on something the CPU could have caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import ctcodec

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def test_the_7b_script_runs_every_variant_on_a_small_model(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHES))
    import gpu_e2e_7b

    model = gpu_e2e_7b.build_dense(gpu_e2e_7b.TINY, 2, "cpu")
    gpu_e2e_7b.to_w4a16(model)
    linears = [mod for _, _, mod in gpu_e2e_7b._decoder_linears(model)]
    assert len(linears) == 14 and all(m.kind == "pack" and m.kernel_layout for m in linears)
    gpu_e2e_7b.to_spqr(model)
    linears = [mod for _, _, mod in gpu_e2e_7b._decoder_linears(model)]
    assert len(linears) == 14 and all(m.kind == "spqr" for m in linears)
    assert all(isinstance(m, ctcodec.CompressedLinear) for m in linears)
    assert torch.isfinite(linears[0].dequantize().float()).all()

    out = tmp_path / "rows.json"
    assert gpu_e2e_7b.main(["--device", "cpu", "--tiny", "--layers", "1", "--batches", "2", "--short", "1",
                            "--long", "9", "--prefill", "32", "--compile-backend", "eager", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    decode = [r for r in rows if "batch" in r]
    assert [r["variant"] for r in decode] == ["dense", "w4a16", "spqr"]
    assert all(r["decode_tokens_per_s_eager"] > 0 and r["decode_tokens_per_s_compiled_eager"] > 0 for r in decode)
    assert [r["prefill_ms"] > 0 for r in rows if "prefill_ms" in r] == [True] * 3
    sys.modules.pop("gpu_e2e_7b", None)
