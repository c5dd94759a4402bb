#!/usr/bin/env bash
# Install the test dependencies into .venv from the lock file and run the tests: the fast
# tier (everything not marked slow, see tests/README.md) by default, both tiers with --all.
# PostgreSQL variants run when OTHERIX_TEST_POSTGRES_URL is set (.ci/run sets it).
# Two pytest-xdist workers, one test file each at a time (--dist loadfile keeps a
# file's module fixtures in one process); OTHERIX_TEST_WORKERS=0 runs serially.
set -euo pipefail
tier=(-m "not slow")
args=()
for arg in "$@"; do
  if [ "$arg" = "--all" ]; then tier=(); else args+=("$arg"); fi
done
set -- ${tier[@]+"${tier[@]}"} ${args[@]+"${args[@]}"}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# the pinned, hash-checked dependencies (requirements/dev.lock, see CONTRIBUTING.md), then
# Otherix itself without resolving anything again
.venv/bin/python -m pip install -q -r requirements/dev.lock
.venv/bin/python -m pip install -q --no-deps -e .
exec .venv/bin/python -m pytest -n "${OTHERIX_TEST_WORKERS:-2}" --dist loadfile "$@"
