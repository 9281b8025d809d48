#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target of rust/fuzz for SECONDS each (default 120),
# from a seed corpus of small real files that ctcodec writes (scripts/fuzz_seeds.py), and
# prints executions and findings per target. Needs the nightly toolchain (rustup) and
# cargo-fuzz (crates.io); both are installed when missing. Findings stay in
# rust/fuzz/artifacts/TARGET/; the exit code is 1 when there is any.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-120}; shift || true
TARGETS=("${@:-header bitmask sparse24 quant spqr}")
read -r -a TARGETS <<<"${TARGETS[*]}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python scripts/fuzz_seeds.py rust/fuzz/corpus
LOGS=$(mktemp -d); ROWS=(); FOUND=0
for t in "${TARGETS[@]}"; do
  echo "=== $t: ${SECS}s"
  cargo +nightly fuzz run --fuzz-dir rust/fuzz -O "$t" "rust/fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$LOGS/$t.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/$t.log" | awk '{print $2}' | tail -1)
  findings=$(find "rust/fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ] && { FOUND=1; tail -30 "$LOGS/$t.log"; }
  ROWS+=("$(printf '%-9s %12s execs %4s findings  (exit %s)' "$t" "${execs:-?}" "$findings" "$rc")")
done
echo "=== summary (${SECS}s per target)"
printf '%s\n' "${ROWS[@]}"
rm -rf "$LOGS"
exit $FOUND
