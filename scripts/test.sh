#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
ruff format --check .
ruff check .
export GRAPHRNN_CACHE_DIR="${GRAPHRNN_CACHE_DIR:-$PWD/.cache/graphrnn}"
# The tests check values, not speed: LLVM's cheapest optimisation level cuts compile time.
export NUMBA_OPT="${NUMBA_OPT:-0}"
python -m pytest -p no:cacheprovider
