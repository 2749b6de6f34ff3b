"""bench/rnn_step.py's peers compute graphrnn's loss and gradients: `--check-only` runs the
float64 check (graphrnn's reference backend against the hand-written NumPy BPTT of
bench/numpy_bptt.py and torch, at B=2 I=3 H=4 T=5, nonzero biases) for every model of the
bench and both losses (output layer + cross-entropy; sum of h*h). No Numba compiling: a few
seconds. torch is optional (the check runs without its column)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_float64_check():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rnn_step.py"), "--check-only"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 12, proc.stdout  # 6 models x 2 losses
    assert all(": agree (" in line for line in lines), proc.stdout
