#!/usr/bin/env bash
# Install the test dependencies into .venv from the lock file and run the whole test suite.
# PostgreSQL variants run when OTHERIX_TEST_POSTGRES_URL is set (.ci/run sets it).
# Two pytest-xdist workers, one test file each at a time (--dist loadfile keeps a
# file's module fixtures in one process); OTHERIX_TEST_WORKERS=0 runs serially.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# the pinned, hash-checked dependencies (requirements/dev.lock, see CONTRIBUTING.md), then
# Otherix itself without resolving anything again
.venv/bin/python -m pip install -q -r requirements/dev.lock
.venv/bin/python -m pip install -q --no-deps -e .
exec .venv/bin/python -m pytest -n "${OTHERIX_TEST_WORKERS:-2}" --dist loadfile "$@"
