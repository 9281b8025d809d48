"""Host time per CompressedLinear call on the W4A16 CUDA path, with the kernel launch
itself stubbed out, so what is measured is the Python and dispatcher work around it:

    .venv/bin/python benches/python_overhead.py [--json benches/results-python-overhead.json]

Runs on a CPU: Triton's interpreter mode lets the CUDA code path take CPU tensors, and
the two launch functions of ctcodec_kernels.matmul are replaced by no-ops.

- before: the forward of CompressedLinear up to commit 71ba920 (lazy repack check, path
  and shape checks, then quant_matmul), copied here as it was (over today's quant_matmul;
  to compare whole versions, run this file from a worktree of the older commit too);
- eager: today's forward (load-time repack; in eager mode the launch path is called
  directly with a PreparedWeight made once), with CPU tensors routed to it here;
- through the dispatcher: torch.ops.ctcodec.kernel_linear.default called as an op (its
  CUDA implementation registered for the CPU key here), what eager mode would pay
  without the direct call;
- with torch.compile(mode="reduce-overhead") a decode step is one CUDA graph replay:
  no Python runs per layer at all. That needs a GPU and is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
os.environ["CTCODEC_KERNELS_TUNE"] = "0"

import torch  # noqa: E402

import ctcodec_kernels as ck  # noqa: E402
import ctcodec_kernels.matmul as matmul  # noqa: E402
from ctcodec.inference.linear import CompressedLinear  # noqa: E402
import ctcodec.inference.linear as linear  # noqa: E402
import ctcodec.inference.ops as ops  # noqa: E402
from ctcodec.inference.ops import _kernel_linear_cuda  # noqa: E402
from ctcodec_kernels.word_packing import pack_rows  # noqa: E402


def _module(n: int, k: int, group: int) -> CompressedLinear:
    g = torch.Generator().manual_seed(0)
    mod = CompressedLinear(k, n, "pack", {"num_bits": 4, "symmetric": True, "group_size": group}, True,
                           torch.float16)
    mod.set_part("weight_packed", pack_rows(torch.randint(0, 16, (n, k), generator=g), 4))
    mod.set_part("weight_scale", (torch.rand(n, k // group, generator=g) * 0.1).to(torch.float16))
    mod.bias.data.zero_()
    return mod


def forward_before(mod: CompressedLinear, x: torch.Tensor) -> torch.Tensor:
    """CompressedLinear.forward's CUDA branch before the custom ops (as of 71ba920)."""
    kernels = ck  # the old forward called a cached `_kernels()` here
    if kernels is not None and x.dtype in (torch.float16, torch.bfloat16):
        if mod._prepared is None:
            p = mod.parts()
            mod._prepared = kernels.prepare(p["weight_packed"], p["weight_scale"], mod.params["num_bits"],
                                            mod.params.get("group_size"), mod.out_features, mod.in_features,
                                            weight_zero_point=p.get("weight_zero_point"),
                                            weight_g_idx=p.get("weight_g_idx"))
        rows = x.numel() // max(x.shape[-1], 1)
        assert rows >= 1
        y = kernels.quant_matmul(x, mod._prepared)
        return y if mod.bias is None else y + mod.bias.to(y.dtype)
    raise AssertionError("not the kernel path")


def per_call_us(fn, x, calls: int, repeats: int) -> float:
    """The best of `repeats` runs of `calls` calls, per call: on a shared 2-core VM the
    median moves by a third from run to run, the minimum by a few percent (timeit's
    reasoning: interference only ever adds time)."""
    for _ in range(200):
        fn(x)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return min(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    for kernel in ("_launch_gemv", "_launch_dot", "_launch_gemv_tc", "_launch_gemm_tc"):
        setattr(matmul, kernel, lambda *a, **kw: None)  # the launches themselves, stubbed
    torch.library.register_kernel("ctcodec::kernel_linear", "cpu", _kernel_linear_cuda)
    ops._kernel_linear_reference = _kernel_linear_cuda  # CPU tensors take the CUDA code path
    linear._kernels = lambda: ck  # and CompressedLinear's eager GPU path
    linear._on_kernels = lambda x: True

    before = _module(args.n, args.k, args.group)
    after = _module(args.n, args.k, args.group)
    assert after.prepare_kernels()
    rows = {}
    with torch.no_grad():
        for m in (1, 16):
            x = torch.randn(1, m, args.k).to(torch.float16)
            rows[f"M={m}"] = {
                "before_us": per_call_us(lambda t: forward_before(before, t), x, args.calls, args.repeats),
                "eager_us": per_call_us(after, x, args.calls, args.repeats),
                "through_dispatcher_us": per_call_us(
                    lambda t: torch.ops.ctcodec.kernel_linear.default(
                        t, after.qweight, after.scales, None, None, after.x_order, 4, after.kernel_group, args.n,
                        args.k)
                    + after.bias, x, args.calls, args.repeats),
                # What a dense layer's host side costs on this machine, for scale.
                "dispatch_of_one_aten_op_us": per_call_us(lambda t: t.view(-1), x, args.calls, args.repeats),
            }
    report = {"shape": [args.n, args.k], "group": args.group, "calls": args.calls, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "rows": rows,
              "note": "launch stubbed; CUDA-graph replay (no per-layer Python) needs a GPU and is not measured"}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
