"""Cost of variable-length batches: a masked LSTM on a batch of mixed lengths against the same
cell on the padded batch without a mask, and against the unmasked LSTM. One training step
(forward, loss, BPTT, every gradient), float32, Numba backend; median of repeated runs.

    python bench/masked.py [--batch 32] [--hidden 128] [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import graphrnn as gr

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    T, B, H = args.steps, args.batch, args.hidden
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, H)).astype(np.float32)
    y = np.eye(H, dtype=np.float32)[rng.integers(0, H, (T, B))]
    lengths = rng.integers(T // 4, T + 1, B)
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float32)
    masked = gr.load(ROOT / "models/lstm_masked.grnn", I=H, H=H, O=H)
    plain = gr.load(ROOT / "models/lstm.grnn", I=H, H=H, O=H)
    fm = masked.compile("numba", dtype="float32", input_grads=False)
    fp = plain.compile("numba", dtype="float32", input_grads=False)
    mixed = median_ms(
        lambda: fm.loss_and_grad(masked.params, {"x": x, "m": mask}, {"y": y}), args.reps
    )
    ones = np.ones_like(mask)
    padded = median_ms(
        lambda: fm.loss_and_grad(masked.params, {"x": x, "m": ones}, {"y": y}), args.reps
    )
    unmasked = median_ms(lambda: fp.loss_and_grad(plain.params, {"x": x}, {"y": y}), args.reps)
    print(f"T={T} B={B} H={H}, lengths {lengths.min()}..{lengths.max()}")
    print(f"masked LSTM, mixed lengths : {mixed:8.2f} ms")
    print(f"masked LSTM, all full      : {padded:8.2f} ms")
    print(f"plain LSTM, padded batch   : {unmasked:8.2f} ms")
    print(f"mixed / plain padded = {mixed / unmasked:.2f}")


if __name__ == "__main__":
    main()
