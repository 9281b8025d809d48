#!/usr/bin/env bash
# The GPU checks on a CUDA machine (the image's python3 with torch and
# triton; ctcodec's extension built elsewhere and carried): kernel tests on the GPU, end
# to end through load_model, benchmarks, then a Llama-7B-shaped model end to end (last:
# whatever time is left; its rows are written as they come).
#   bash scripts/gpu_check.sh OUT_DIR BUNDLE_DIR
# BUNDLE_DIR holds small compressed checkpoints (tiny-*) and smollm2-config/config.json.
# Stage limits (seconds, env): FIRST_TESTS_S 60 then KERNEL_TESTS_S 120, BENCH_S 240,
# E2E_S 90, E2E_7B_S 180: about 690 s in all, so that with a machine's start-up they fit a
# 15-minute loan. Every stage logs as it goes, so one cut off by its limit keeps what it
# measured. One device command may run 600 s at most, so run it as two calls:
#   STAGES="tests bench" bash scripts/gpu_check.sh OUT BUNDLE      (~420 s)
#   STAGES="e2e e2e7b" bash scripts/gpu_check.sh OUT2 BUNDLE       (~270 s)
# (STAGES defaults to all four.) The sm_90 compile tests are left out here: they run on any
# machine (CI) and would only repeat.
set -u
OUT=${1:?out dir}; BUNDLE=${2:?bundle dir}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python:$PWD/kernels:$PWD/tests:$PWD/scripts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/device.txt"
STAGES=" ${STAGES:-tests bench e2e e2e7b} "
want() { [[ "$STAGES" == *" $1 "* ]]; }
if want tests; then
echo "== kernel tests"; SECONDS=0
# First what only a GPU can check and has never run on one: the GPU's own fp16/bf16 products
# in the bit-unpacked GEMM and the tensor-core GEMV (the interpreter computes them in fp32),
# and the SpQR x gathers (rewritten since the H200 run). Their kernels stay in Triton's
# cache for the whole suite after.
CTCODEC_KERNELS_TUNE=0 timeout "${FIRST_TESTS_S:-60}" python3 -m pytest -v kernels/tests/test_quant_matmul.py \
  kernels/tests/test_spqr_matvec.py -p no:cacheprovider \
  -k "bit_for_bit or bit_unpacked or tensor_core_gemv or gathers" > "$OUT/kernel-tests-first.log" 2>&1
echo "first kernel tests passed: $(grep -c ' PASSED' "$OUT/kernel-tests-first.log"), failed: $(grep -cE ' (FAILED|ERROR)' "$OUT/kernel-tests-first.log")"
grep -E ' (FAILED|ERROR)' "$OUT/kernel-tests-first.log" | head -10
# -v: a line per test as it ends, so a run cut off by the limit still shows what passed.
CTCODEC_KERNELS_TUNE=0 timeout "${KERNEL_TESTS_S:-120}" python3 -m pytest -v kernels/tests -p no:cacheprovider \
  --ignore kernels/tests/test_compile_hopper.py -k "not compiles_for_hopper" > "$OUT/kernel-tests.log" 2>&1
echo "kernel tests passed: $(grep -c ' PASSED' "$OUT/kernel-tests.log"), failed: $(grep -cE ' (FAILED|ERROR)' "$OUT/kernel-tests.log")"
grep -E ' (FAILED|ERROR)' "$OUT/kernel-tests.log" | head -20; tail -3 "$OUT/kernel-tests.log"
echo "kernel tests: ${SECONDS}s"
fi
if want bench; then
echo "== benchmarks"; SECONDS=0
timeout "${BENCH_S:-240}" python3 benches/bench_kernels.py --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -90
echo "bench: ${SECONDS}s"
fi
if want e2e; then
echo "== end to end"; SECONDS=0
timeout "${E2E_S:-90}" python3 benches/gpu_e2e.py "$BUNDLE"/tiny-* --random-from-config "$BUNDLE/smollm2-config" --compile --json "$OUT/e2e.json" 2>&1 | grep -v Warning | tail -12 | tee "$OUT/e2e.log"
echo "e2e: ${SECONDS}s"
fi
if want e2e7b && [ "${E2E_7B_S:-180}" != 0 ]; then  # E2E_7B_S=0 skips it (timeout 0 would mean no limit)
  echo "== end to end, Llama-7B shape (random weights: dense, W4A16, SpQR; eager and CUDA graphs; prefill 2048)"; SECONDS=0
  timeout "${E2E_7B_S:-180}" python3 benches/gpu_e2e_7b.py --layers "${E2E_7B_LAYERS:-32}" --batches 1 16 --short 16 --long 48 \
    --json "$OUT/e2e-7b.json" 2>&1 | grep -v Warning | tail -12 | tee "$OUT/e2e-7b.log"
  echo "e2e 7b: ${SECONDS}s"
fi
