"""Mutate the shipped model files N times and count what happens (issue 12's probe).

    python scripts/fuzz_models.py                 # 10,000 cases on the reference backend
    python scripts/fuzz_models.py -n 500 --numba 20 --seed 3 --show 5

Each case is one edit of one file of models/ (graphrnn/fuzz.py lists the edits), driven
through parse, compile and run. Prints the counts by outcome and by error class, and the
first few defects (a raw exception, or an error without a place). Exit status 1 when any
case was a defect.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphrnn.fuzz import drive, mutate, shipped_models  # noqa: E402


def cases(n: int, seed: int):
    """(model file name, mutation, mutated text) for n cases, reproducible from seed."""
    models = shipped_models(ROOT)
    names = sorted(models)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        mutation, text = mutate(models[name], rng)
        yield name, mutation, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="cases (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--numba", type=int, default=0, help="also run the first K on Numba")
    parser.add_argument("--show", type=int, default=10, help="defects to print")
    args = parser.parse_args(argv)
    outcomes: Counter = Counter()
    errors: Counter = Counter()
    defects = []
    start = time.perf_counter()
    for k, (name, mutation, text) in enumerate(cases(args.n, args.seed)):
        backends = ["reference"] + (["numba"] if k < args.numba else [])
        for backend in backends:
            result = drive(text, f"{name}~{k}", backend)
            outcomes[(backend, result.kind)] += 1
            if result.kind == "error":
                errors[result.detail.split(":")[0]] += 1
            if result.defect:
                defects.append((k, name, mutation, backend, result.detail))
        if (k + 1) % 1000 == 0:
            print(f"... {k + 1} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"{args.n} mutated model files, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    for (backend, kind), count in sorted(outcomes.items()):
        print(f"  {backend:<9} {kind:<9} {count}")
    print("errors by class: " + ", ".join(f"{c} {n}" for c, n in errors.most_common()))
    for k, name, mutation, backend, detail in defects[: args.show]:
        print(f"\ncase {k} ({name}, {mutation}, {backend}):\n  {detail}")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
