#!/usr/bin/env bash
# Regenerates the pinned environments in requirements/*.lock from requirements/*.in and
# pyproject.toml's ranges, with uv (pinned in requirements/bootstrap.lock). The locks are for
# tests, CI, benchmarks and the demo; users get pyproject.toml's ranges.
#   bash scripts/lock.sh            # keeps existing pins, adds what pyproject/.in files newly ask for
#   bash scripts/lock.sh --upgrade  # moves every pin to the newest allowed version
# then: bash scripts/test.sh, and commit requirements/
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
[ -x "$UV" ] || { python3 -m pip install -q --target .cache/uv-tool -r requirements/bootstrap.lock; UV=.cache/uv-tool/bin/uv; }
COMMON=("$@" --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header)
# The test / bench / demo environment: ctcodec's test extras plus the build tools.
"$UV" pip compile "${COMMON[@]}" pyproject.toml requirements/tools.in --extra test --extra torch \
  -o requirements/test.lock
# Installed --no-deps: pinned alone, with hashes.
for name in bootstrap models ct-current ct-017; do
  "$UV" pip compile "${COMMON[@]}" --no-deps "requirements/$name.in" -o "requirements/$name.lock"
done
echo "locked: $(ls requirements/*.lock | tr '\n' ' ')"
