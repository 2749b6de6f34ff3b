#!/usr/bin/env python
"""Memory and time of one LSTM training step, plain BPTT beside segmented BPTT with
recomputation (`compile(..., bptt_checkpoint=k)`, k = ceil(sqrt(T)) by default).

    python bench/bptt_checkpoint.py [--T 1000,4000] [--B 32] [--H 128] [--k auto] [--threads 1]
                                    [--input-grads] [--json F]

Each configuration runs in its own subprocess (a fresh heap, so the peak resident set is that
configuration's alone): load models/lstm.grnn (I = H = O), compile for Numba in float32, one
warm-up step (compiles, or loads the kernels from the disk cache), then peak memory of one
step two ways (bench/rnn_step.py's measure_memory: the RSS high-water mark above the RSS
before the step, and tracemalloc's peak, which sees numpy's and Numba's NRT buffers), then the
median wall time of a training step (loss_and_grad: forward, loss, BPTT, the gradient of
every parameter; with --input-grads also d loss / d x, an O(T) array in both modes). The
parent prints a table, checks that the two modes give the same loss, and writes every figure
(with the machine's load) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from rnn_step import machine_info, measure_memory  # noqa: E402


def child(T: int, B: int, H: int, k: str, reps: int, min_time: float, dx: bool) -> dict:
    """One configuration, in this process: compile, warm up, memory, then time."""
    import graphrnn as gr

    model = gr.load(ROOT / "models/lstm.grnn", seed=0, I=H, H=H, O=H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    y = np.eye(H, dtype=np.float32)[rng.integers(0, H, (T, B))]
    params = {n: v.astype(np.float32) for n, v in model.params.items()}
    option = {} if k == "plain" else {"bptt_checkpoint": k if k == "auto" else int(k)}
    option["input_grads"] = dx
    t0 = time.perf_counter()
    fn = model.compile("numba", "float32", **option)

    def step():
        return fn.loss_and_grad(params, {"x": x}, {"y": y})

    loss = step()[0]
    first = time.perf_counter() - t0
    memory = measure_memory(step)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < reps or time.perf_counter() - start < min_time:
        t1 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t1)
    segment = getattr(fn, "_k", lambda t: None)(T)
    return {
        "T": T,
        "B": B,
        "H": H,
        "mode": "plain" if k == "plain" else "checkpoint",
        "k": segment,
        "input_grads": dx,
        "loss": loss,
        "compile_and_first_step_s": round(first, 3),
        "step_median_s": statistics.median(samples),
        "step_min_s": min(samples),
        "samples": len(samples),
        **memory,
    }


def run_child(T: int, args, k: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(T), "--B", str(args.B), "--H", str(args.H)]
    cmd += ["--k", k, "--reps", str(args.reps), "--min-time", str(args.min_time)]
    cmd += ["--input-grads"] if args.input_grads else []
    env = dict(os.environ)
    if args.threads:  # BLAS and Numba threads; 1 keeps a shared, loaded machine from thrashing
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(args.threads)
        env["NUMBA_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    print(
        f"{'T':>6} {'mode':<12} {'k':>4} {'step ms':>9} {'time x':>7} "
        f"{'RSS peak MiB':>13} {'tracemalloc MiB':>16} {'memory x':>9} {'loss rel diff':>14}"
    )
    plain = {r["T"]: r for r in rows if r["mode"] == "plain"}
    for r in rows:
        base = plain.get(r["T"], r)
        time_x = r["step_median_s"] / base["step_median_s"]
        mem_x = r["tracemalloc_peak_mib"] / base["tracemalloc_peak_mib"]
        diff = abs(r["loss"] - base["loss"]) / abs(base["loss"])
        k = "-" if r["k"] is None else str(r["k"])
        print(
            f"{r['T']:>6} {r['mode']:<12} {k:>4} {r['step_median_s'] * 1e3:>9.1f} {time_x:>7.2f} "
            f"{r['rss_peak_delta_mib']:>13.1f} {r['tracemalloc_peak_mib']:>16.1f} "
            f"{mem_x:>9.3f} {diff:>14.1e}"
        )


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", default="1000,4000", help="sequence lengths, comma-separated")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=128, help="I = H = O")
    ap.add_argument("--k", default="auto", help="steps per segment, or auto = ceil(sqrt(T))")
    ap.add_argument("--reps", type=int, default=5, help="at least this many timed steps")
    ap.add_argument("--min-time", type=float, default=5.0, help="and at least this long (s)")
    ap.add_argument(
        "--input-grads",
        action="store_true",
        help="also d loss / d x (an O(T) output; off by default, as in `graphrnn train`)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS/Numba threads per configuration (default: the libraries' own choice); "
        "1 gives stable figures on a machine that other jobs load",
    )
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=None, help="write every figure and the machine info here")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        result = child(
            args.child, args.B, args.H, args.k, args.reps, args.min_time, args.input_grads
        )
        print(json.dumps(result))
        return 0
    info = machine_info()
    print(
        f"LSTM, float32, numba, B={args.B}, I=H=O={args.H}; {os.cpu_count()} CPUs, "
        f"threads: {args.threads or 'library default'}, "
        f"gradients: parameters{' and x' if args.input_grads else ' only'}, "
        f"load average before: {', '.join(f'{v:.2f}' for v in info['loadavg'])}"
    )
    info["threads"] = args.threads
    rows = []
    for T in (int(t) for t in args.T.split(",")):
        for k in ("plain", args.k):
            rows.append(run_child(T, args, k))
            print(f"  done T={T} {k}: {rows[-1]['step_median_s']:.3f} s", file=sys.stderr)
    info["loadavg_after"] = os.getloadavg()
    print_table(rows)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in info['loadavg_after'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": info}, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
