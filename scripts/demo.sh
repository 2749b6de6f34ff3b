#!/usr/bin/env bash
# Set up a virtual environment and run the main job: train an LSTM written in the model
# language (models/lstm_classifier.grnn) on the bundled 8x8 digits read row by row, then
# gradient-check the Elman network and draw it unrolled over three steps.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
        || echo "could not install graphviz; pictures will be written as .dot only"
fi
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
graphrnn train models/lstm_classifier.grnn --task digits --dim H=64 --epochs 12 --out runs/lstm-digits
graphrnn check models/elman.grnn --dim H=16
if command -v dot >/dev/null 2>&1; then
    graphrnn render models/elman.grnn --unroll 3 -o runs/elman.svg
else
    graphrnn render models/elman.grnn --unroll 3 -o runs/elman.dot
fi
