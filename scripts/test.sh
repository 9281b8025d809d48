#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs every test stage: Rust (cargo), Python
# (pytest), and pytest again through the fallback I/O paths. Every stage runs even when
# an earlier one fails; one summary of all stages closes the run, and the exit code is
# non-zero when any stage failed. Extra arguments go to both pytest stages.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; exit 1; }
LOGS=$(mktemp -d)
STAGES=() RESULTS=() FAILED=0 PASSED_ALL=0 FAILED_ALL=0

stage() {  # stage NAME COMMAND...: runs it, tees its output, records rc, counts and time
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  local passed failed
  if [ "$name" = cargo ]; then
    passed=$(grep -oE '[0-9]+ passed' "$LOGS/$name.log" | awk '{s += $1} END {print s + 0}')
    failed=$(grep -oE '[0-9]+ failed' "$LOGS/$name.log" | awk '{s += $1} END {print s + 0}')
  else
    local last; last=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$LOGS/$name.log" | tail -1)
    passed=$(grep -oE '[0-9]+ passed' <<<"$last" | awk '{print $1}'); passed=${passed:-0}
    failed=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$last" | awk '{s += $1} END {print s + 0}')
  fi
  # pytest's exit 5 (no test collected) is a failure here: every stage must run tests.
  if [ "$rc" -ne 0 ] || [ "$passed" -eq 0 ]; then FAILED=1; status=FAILED; else status=ok; fi
  PASSED_ALL=$((PASSED_ALL + passed)); FAILED_ALL=$((FAILED_ALL + failed))
  STAGES+=("$name"); RESULTS+=("$(printf '%-7s %-8s %6s passed %4s failed %6ss (exit %s)' "$name" "$status" "$passed" "$failed" $((SECONDS - t0)) "$rc")")
}

stage cargo cargo test --workspace -q
stage pytest .venv/bin/python -m pytest -q "$@"
# The same suites again through the fallback I/O paths (positioned reads and writes
# instead of mmap), which network filesystems and filesystems without fallocate use.
stage no-mmap env CTCODEC_NO_MMAP=1 .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider tests "$@"

echo "=== summary"
printf '%s\n' "${RESULTS[@]}"
echo "total: $PASSED_ALL passed, $FAILED_ALL failed"
rm -rf "$LOGS"
exit $FAILED
