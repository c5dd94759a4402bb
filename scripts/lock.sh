#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml: requirements/dev.lock (runtime and
# dev dependencies) and requirements/runtime.lock (runtime only, the same versions,
# constrained by dev.lock). Every line is pinned with its hashes, so pip installs
# from them in hash-checking mode.
#   bash scripts/lock.sh            keep the pins that still satisfy pyproject.toml
#   bash scripts/lock.sh --upgrade  move every pin to the newest allowed release
#   bash scripts/lock.sh --upgrade-package NAME   move one
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q 'pip-tools==7.6.2'
# The extras stay on the pins (coverage[toml]==..., psycopg[binary]==...): with them
# stripped, pip 23.2 (Python 3.11's bundled pip) resolves a dependant's `coverage[toml]>=X`
# to the newest release on the index and refuses it as unpinned in hash-checking mode, so a
# release upstream would break a fresh install. pip refuses extras in a constraints file, so
# runtime.lock is constrained by a copy of dev.lock with them removed.
common=(--quiet --generate-hashes --allow-unsafe --no-strip-extras --no-emit-index-url
        --no-emit-find-links)
.venv/bin/pip-compile "${common[@]}" --extra dev -o requirements/dev.lock "$@" pyproject.toml
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
sed -E 's/^([A-Za-z0-9_.-]+)\[[^]]*\]==/\1==/' requirements/dev.lock >"$constraints"
.venv/bin/pip-compile "${common[@]}" -c "$constraints" -o requirements/runtime.lock \
    pyproject.toml
# the file's comments name the lock it follows, not the temporary copy
sed -i "s|$constraints|requirements/dev.lock|" requirements/runtime.lock
