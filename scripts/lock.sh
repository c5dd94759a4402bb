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
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
        --no-emit-find-links)
.venv/bin/pip-compile "${common[@]}" --extra dev -o requirements/dev.lock "$@" pyproject.toml
.venv/bin/pip-compile "${common[@]}" -c requirements/dev.lock -o requirements/runtime.lock \
    pyproject.toml
