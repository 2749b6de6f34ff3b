"""The SpatialRNN (ReSeg) classifier, models/spatial_rnn_sex.grnn, at full size.

One training step (forward, loss, full backward, every gradient) on random 3xSxS images: the
time per example and the peak resident memory of the process for a batch, with the compile
time reported apart. Each configuration runs in a child process, so its peak memory is its
own. With --digits it also runs the reduced-width digits 3-vs-8 example and reports its
validation accuracy and wall time.

    python bench/spatial_rnn.py                          # 128x128, batch 16, numba float32
    python bench/spatial_rnn.py --size 64 --batch 4 --backend reference
    python bench/spatial_rnn.py --digits --json spatial.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "spatial_rnn_sex.grnn"
DIGITS_DIMS = dict(HI=32, WI=32, C1=4, C2=4, C3=4, C4=4, H1=4, H2=4)


def step_probe(size: int, batch: int, backend: str, dtype: str, repeats: int) -> dict:
    """In the child: compile, then time `repeats` training steps after the first."""
    import graphrnn as gr

    model = gr.load(MODEL, HI=size, WI=size)
    fn = model.compile(backend, dtype=dtype)
    rng = np.random.default_rng(0)
    params = {k: v.astype(dtype) for k, v in model.params.items()}
    img = rng.uniform(0, 255, size=(batch, 3, size, size)).astype(dtype)
    y = np.eye(2, dtype=dtype)[rng.integers(0, 2, batch)]
    t0 = time.perf_counter()
    fn.loss_and_grad(params, {"img": img}, {"y": y})
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn.loss_and_grad(params, {"img": img}, {"y": y})
        times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    return {
        "size": size,
        "batch": batch,
        "backend": backend,
        "dtype": dtype,
        "params": int(sum(v.size for v in model.params.values())),
        "first_step_s": round(first, 2),
        "compile_s": round(first - step, 2),
        "step_s": round(step, 3),
        "per_example_s": round(step / batch, 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def digits_probe(backend: str, dtype: str, epochs: int) -> dict:
    from graphrnn.train.session import TrainConfig, run

    out = Path(tempfile.mkdtemp(prefix="grnn_digits_"))
    config = TrainConfig(
        model=str(MODEL),
        task="digit_images",
        sizes=dict(DIGITS_DIMS),
        epochs=epochs,
        backend=backend,
        dtype=dtype,
        out=str(out),
        progress=False,
    )
    t0 = time.perf_counter()
    history, _ = run(config)
    wall = time.perf_counter() - t0
    last = history.epochs[-1]
    return {"dims": DIGITS_DIMS, "epochs": epochs, "wall_s": round(wall, 1), **last}


def run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128, help="image side (a multiple of 32)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--backend", default="numba", choices=["numba", "reference"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=3, help="timed steps after the first")
    ap.add_argument("--digits", action="store_true", help="also train the digits example")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the digits example")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "step":
            size, batch, backend, dtype, repeats = rest
            result = step_probe(int(size), int(batch), backend, dtype, int(repeats))
        else:
            backend, dtype, epochs = rest
            result = digits_probe(backend, dtype, int(epochs))
        print(json.dumps(result))
        return 0
    if args.size % 32:
        ap.error("--size must be a multiple of 32 (five halvings)")
    results = {"loadavg_before": os.getloadavg(), "cpu_count": os.cpu_count()}
    step_args = ["step", args.size, args.batch, args.backend, args.dtype, args.repeats]
    results["step"] = run_child([str(a) for a in step_args], args.timeout)
    print(json.dumps(results["step"], indent=1))
    if args.digits:
        digits_args = ["digits", args.backend, args.dtype, str(args.epochs)]
        results["digits"] = run_child(digits_args, args.timeout)
        print(json.dumps(results["digits"], indent=1))
    results["loadavg_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
