"""The command line: `graphrnn render | check | ...`, mirroring the Python API.

User mistakes (GraphRNNError) are printed as the error's message with exit status 2; no
traceback from inside the compiler reaches the user.
"""

from __future__ import annotations

import argparse
import sys

from graphrnn.errors import GraphRNNError

CHECK_TOLERANCE = 1e-6
DEFAULT_SIZE = 4


def _sizes(pairs: list[str] | None) -> dict[str, int]:
    sizes = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier() or not value.strip().lstrip("-").isdigit():
            raise GraphRNNError(f"--dim expects NAME=INTEGER, e.g. --dim H=16; got {pair!r}")
        sizes[name] = int(value)
    return sizes


def _load(args, fill_sizes: bool = False):
    import graphrnn as gr
    from graphrnn.dsl import parse_file

    sizes = _sizes(args.dim)
    if fill_sizes:
        module = parse_file(args.model)
        models = [m for m in module.items if type(m).__name__ == "ModelDef"]
        if models:
            for p in models[0].params:
                if p.name not in sizes and p.default is None:
                    sizes[p.name] = DEFAULT_SIZE
    return gr.load(args.model, seed=args.seed, **sizes)


def cmd_render(args) -> int:
    from graphrnn.viz import render

    model = _load(args, fill_sizes=True)
    result = render(model, unroll=args.unroll, path=args.output, detail=args.detail)
    if args.output is None:
        print(result)
    else:
        print(f"wrote {args.output}")
    return 0


def cmd_check(args) -> int:
    from graphrnn.check import gradient_check

    model = _load(args, fill_sizes=True)
    if model.graph.loss is None:
        raise GraphRNNError(
            f"{args.model}: the model declares no loss, so there is nothing to check"
        )
    sizes = ", ".join(f"{k}={v}" for k, v in model.sizes.items())
    print(f"{model.name} ({sizes}) tau={args.tau} batch={args.batch} backend={args.backend}")
    results = gradient_check(model, args.tau, args.batch, args.seed, args.backend)
    worst = 0.0
    for r in results:
        part = "" if r.checked == r.total else f" ({r.checked} of {r.total} elements sampled)"
        print(f"{r.name:<16} rel_error={r.rel_error:.3e}  |grad|={r.grad_norm:.3e}{part}")
        worst = max(worst, r.rel_error)
    print(f"max_rel_error={worst:.3e}")
    return 0 if worst < CHECK_TOLERANCE else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.grnn)")
    p.add_argument("--dim", action="append", metavar="NAME=N", help="a size, e.g. --dim H=16")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="draw the folded or unrolled graph")
    _common(p)
    p.add_argument("--unroll", type=int, metavar="TAU", help="unroll over TAU steps")
    p.add_argument("-o", "--output", help="output file: .dot, .svg, .png or .pdf")
    p.add_argument("--detail", choices=["equations", "ops"], default="equations")
    p.set_defaults(run=cmd_render)

    p = sub.add_parser("check", help="gradient check against central finite differences")
    _common(p)
    p.add_argument("--tau", type=int, default=5, help="sequence length (default 5)")
    p.add_argument("--batch", type=int, default=3, help="batch size (default 3)")
    p.add_argument("--backend", default="reference", help="backend whose gradients are checked")
    p.set_defaults(run=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GraphRNNError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
