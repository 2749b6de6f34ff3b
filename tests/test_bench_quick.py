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


def test_bench_quick_row(tmp_path):
    """One tiny row of `--quick` end to end (Elman, loss on h; graphrnn compiles into a fresh
    cache, about 5 s): every column that is installed runs, agrees, and lands in the JSON."""
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["GRAPHRNN_CACHE_DIR"] = str(tmp_path / "cache")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "rnn_step.py"), "--quick", "--no-compile"]
    cmd += ["--models", "elman", "--losses", "h2", "--budget", "0.1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert (case["model"], case["loss"], case["size"]) == ("elman", "h2", "Q1")
    assert case["check"]["agree"] and case["check_float64"]["agree"], case["check"]
    assert case["impls"]["graphrnn"]["status"] == "ok"
    assert case["impls"]["numpy"]["status"] == "ok"
    assert case["impls"]["graphrnn"]["ratio_to_fastest_peer"] is not None
    assert "| elman | h2 | Q1 |" in proc.stdout
