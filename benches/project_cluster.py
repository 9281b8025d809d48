"""A paper projection of calibrated GPTQ wall time for 70B and 405B models on 8 and 64
nodes, from the per-layer costs measured by bench_cluster.py (one CPU per unit of work)
and stated machine figures. Prints a Markdown table.

    .venv/bin/python benches/project_cluster.py [benches/results-cluster.json]

Assumptions (stated, not measured): nodes of 64 cores at the measured per-core rates;
10 Gb/s (1.25 GB/s) between nodes, all Hessian blocks into and decoded weights out of
the driver over one link; calibration of 128 sequences of 2048 tokens in batches of 16
(so 8 batches, `BATCHES_PER_BLOCK` = 2, 4 blocks: at most 4 data partitions); a solve is
one task on one thread (as today, for bit identity), so a layer's solve time is at least
its largest weight's.
"""

import json
import sys
from pathlib import Path

SMOL = dict(hidden=576, inter=1536, kv=192, layers=30)
MODELS = {"Llama-3 70B": dict(hidden=8192, inter=28672, kv=1024, layers=80),
          "Llama-3.1 405B": dict(hidden=16384, inter=53248, kv=1024, layers=126)}
CORES, LINK = 64, 1.25e9
TOKENS, BATCHES, BLOCKS = 128 * 2048, 8, 4


def modules(m):
    h, i, kv = m["hidden"], m["inter"], m["kv"]
    # (rows, cols) of q, k, v, o, gate, up, down
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]


def params(m):
    return sum(r * c for r, c in modules(m))


def solve_work(m):
    return [r * c * c for r, c in modules(m)]  # GPTQ is O(rows · cols²) per weight


def main() -> int:
    res = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "benches/results-cluster.json").read_text())
    one = res["calibrated"]["local:1"]["phases_s"]
    workload = res["calibrated"]["workload"]
    tokens_measured = workload["nsamples"] * workload["seqlen"]
    # Per-core rates from the one-CPU run of SmolLM2-135M.
    flops = 2 * params(SMOL) * tokens_measured * 2 * SMOL["layers"]  # forward + propagate
    flop_rate = flops / (one["forward"] + one["propagate"])
    solve_rate = sum(solve_work(SMOL)) * SMOL["layers"] / one["solve"]
    print(f"measured per core: {flop_rate / 1e9:.1f} GFLOP/s forward, {solve_rate / 1e9:.2f} G(rows*cols^2)/s GPTQ\n")
    print("| model | nodes | forward+propagate | solve (largest weight bound) | Hessians to driver | weights to workers | total |")
    print("|---|---|---|---|---|---|---|")
    for name, m in MODELS.items():
        L = m["layers"]
        fwd_core_s = 2 * params(m) * TOKENS * 2 / flop_rate
        work = solve_work(m)
        h_bytes = sum(4 * c * c for _r, c in modules(m)) * BLOCKS
        w_bytes = 4 * params(m)
        for nodes in (8, 64):
            parts = min(nodes, BLOCKS)
            fwd = fwd_core_s / (parts * CORES)
            solve = max(max(work) / solve_rate, sum(work) / solve_rate / (nodes * CORES))
            reduce_s = h_bytes / LINK
            bcast = w_bytes * parts / LINK
            total = L * (fwd + solve + reduce_s + bcast)
            print(f"| {name} | {nodes} | {L * fwd / 3600:.2f} h | {L * solve / 3600:.1f} h | {L * reduce_s / 3600:.2f} h "
                  f"| {L * bcast / 3600:.2f} h | **{total / 3600:.1f} h** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
