"""The command line: `graphrnn render | check | ...`, mirroring the Python API.

User mistakes (GraphRNNError) are printed as the error's message with exit status 2; no
traceback from inside the compiler reaches the user.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from functools import partial
from pathlib import Path

from graphrnn.errors import GraphRNNError

CHECK_TOLERANCE = 1e-6
FIRST_DEFAULT_SIZE = 3  # unnamed sizes get 3, 4, 5, ...: distinct, so swapped shapes fail


def _sizes(pairs: list[str] | None) -> dict[str, int]:
    sizes = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier() or not value.strip().lstrip("-").isdigit():
            raise GraphRNNError(f"--dim expects NAME=INTEGER, e.g. --dim H=16; got {pair!r}")
        sizes[name] = int(value)
    return sizes


def _load(args, fill_sizes: bool = False):
    from graphrnn.dsl import parse_file
    from graphrnn.model import load

    sizes = _sizes(args.dim)
    if fill_sizes:
        module = parse_file(args.model)
        models = [m for m in module.items if type(m).__name__ == "ModelDef"]
        if models:
            missing = [
                p.name for p in models[0].params if p.name not in sizes and p.default is None
            ]
            for k, name in enumerate(missing):
                sizes[name] = FIRST_DEFAULT_SIZE + k
    return load(args.model, seed=args.seed, **sizes)


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
    if args.samples < 1:
        raise GraphRNNError(f"--samples must be at least 1, got {args.samples}")
    if not 0 < args.eps < 1:
        raise GraphRNNError(f"--eps must be between 0 and 1, got {args.eps}")
    sizes = ", ".join(f"{k}={v}" for k, v in model.sizes.items())
    print(f"{model.name} ({sizes}) tau={args.tau} batch={args.batch} backend={args.backend}")

    def show(r) -> None:
        part = "" if r.checked == r.total else f" ({r.checked} of {r.total} elements sampled)"
        print(
            f"{r.name:<16} rel_error={r.rel_error:.3e}  |grad|={r.grad_norm:.3e}{part}", flush=True
        )

    results = gradient_check(
        model,
        args.tau,
        args.batch,
        args.seed,
        _backend(args.backend),
        eps=args.eps,
        samples=args.samples,
        full=args.full,
        progress=show,
        plan=partial(_show_plan, len(model.params)),
    )
    worst = max((r.rel_error for r in results), default=0.0)
    print(f"max_rel_error={worst:.3e}")
    return 0 if worst < CHECK_TOLERANCE else 1


def _show_plan(params: int, evaluations: int, seconds: float) -> None:
    total = evaluations * seconds
    shown = f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"
    print(
        f"checking {params} parameters: {evaluations} loss evaluations of {seconds:.3g} s, "
        f"about {shown}; one line per parameter as it is done"
        + ("; fewer with --samples N --full N or smaller --dim sizes" if total >= 60 else ""),
        flush=True,
    )


def cmd_predict(args) -> int:
    from graphrnn.train.images import predict

    failed = 0
    for path, probs in predict(args.checkpoint, args.images):
        if isinstance(probs, str):
            print(f"{path}: error: {probs}", file=sys.stderr)
            failed += 1
        else:
            print(path + ": " + ", ".join(f"{c}={p:.4f}" for c, p in probs.items()))
    return 2 if failed else 0


def cmd_train(args) -> int:
    from graphrnn.train.session import TrainConfig, run, task_defaults

    task = args.task or ("faces" if args.data else None)
    if task is None:
        raise GraphRNNError(
            "give --task (adding, digits, chars, faces, digit_images), or --data DIR for faces"
        )
    defaults = task_defaults(task, args.optimizer)

    def option(name: str):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    config = TrainConfig(
        model=args.model,
        task=task,
        sizes=_sizes(args.dim),
        epochs=args.epochs,
        batch=option("batch"),
        optimizer=option("optimizer"),
        lr=option("lr"),
        momentum=args.momentum,
        weight_decay=option("weight_decay"),
        clip=args.clip or None,
        backend=_backend(args.backend),
        dtype=args.dtype,
        out=args.out or f"runs/{Path(args.model).stem}-{task}",
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        steps=args.steps,
        n_train=args.n_train,
        text=args.text,
        seq_len=args.seq_len,
        data=args.data,
        bptt_checkpoint=args.bptt_checkpoint,
        tbptt=args.tbptt,
        damping=args.damping,
        cg_iters=args.cg_iters,
        curvature_batch=args.curvature_batch,
    )
    _, last = run(config)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"finished: {shown}")
    print(f"run directory: {config.out} (checkpoint.npz, metrics.jsonl, curves.png)")
    return 0


def cmd_sample(args) -> int:
    from graphrnn.train.sample import sample_text

    print(sample_text(args.checkpoint, args.length, args.prime, args.temperature, args.seed))
    return 0


def cmd_compile(args) -> int:
    model = _load(args, fill_sizes=True)
    fn = model.compile(_backend(args.backend), dtype=args.dtype, **_pass_options(args))
    graphs = {"forward": lambda: fn.forward_graph, "grad": lambda: fn.adjoint}
    graphs.update(hvp=model.hvp_graph, gnvp=model.gnvp_graph)
    graph = graphs[args.graph]()
    if args.explain:
        for line in fn.explain(graph):
            print(line)
    if args.emit == "numba":
        print(fn.executor.source(fn.prepared(graph)))
    elif args.emit == "ir":
        for node in fn.prepared(graph).nodes():
            print(node)
    return 0


def _pass_options(args) -> dict:
    return {"disable": args.disable} if args.disable else {}


def _backend(name: str) -> str:
    """`auto` picks the GPU when CuPy sees one, and says which it chose."""
    if name != "auto":
        return name
    from graphrnn.backends.cupy_gpu import pick_backend

    return pick_backend(say=lambda message: print(message, file=sys.stderr))


def _checkpoint_steps(text: str) -> int | str:
    """--bptt-checkpoint: a positive number of steps per segment, or 'auto'."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return int(text)


def _at_least(minimum: int):
    """An option that counts something: 1 or more (steps, examples), or 0 or more (epochs,
    characters to generate)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int, _count = _at_least(1), _at_least(0)


def _positive_float(text: str) -> float:
    """A rate or a scale: finite and above 0 (rules out nan, inf, 0 and negatives)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


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
    p.add_argument("--tau", type=_positive_int, default=5, help="sequence length (default 5)")
    p.add_argument("--batch", type=_positive_int, default=3, help="batch size (default 3)")
    p.add_argument(
        "--backend", default="reference", help="reference | numba | cupy | auto (GPU if present)"
    )
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=200,
        help="elements checked in each parameter over --full elements (default 200)",
    )
    p.add_argument(
        "--full",
        type=_positive_int,
        default=400,
        help="parameters of up to this many elements are checked on every element (default 400)",
    )
    p.add_argument(
        "--eps",
        type=_positive_float,
        default=1e-5,
        help="finite-difference step (default 1e-5; smaller for strongly curved losses)",
    )
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("train", help="train a model on a built-in task")
    _common(p)
    p.add_argument(
        "--task",
        help="adding | digits | chars | faces | digit_images (default with --data: faces)",
    )
    p.add_argument("--epochs", type=_count, default=10)
    p.add_argument("--batch", type=_positive_int, help="batch size (default 32; faces: 128)")
    p.add_argument(
        "--optimizer",
        help="sgd | momentum | adam | hessian-free (default adam; faces: momentum); "
        "hessian-free: batch 1000 by default, no clipping (docs/second_order.md)",
    )
    p.add_argument("--lr", type=_positive_float, help="learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, help="default 0; faces: 0.0005")
    p.add_argument("--clip", type=float, default=1.0, help="clip gradients by global norm (0: off)")
    p.add_argument("--backend", default="numba", choices=["reference", "numba", "cupy", "auto"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", help="run directory (default runs/MODEL-TASK)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in --out, deleting the run there"
    )
    p.add_argument(
        "--steps", type=_positive_int, help="sequence length for the adding task (default 100)"
    )
    p.add_argument("--n-train", type=_positive_int, help="training examples for the adding task")
    p.add_argument("--text", help="UTF-8 text file for the chars task")
    p.add_argument(
        "--seq-len", type=_positive_int, default=50, help="chunk length for truncated BPTT"
    )
    p.add_argument("--data", help="faces task: UTKFace-named image folder or CSV of path,label")
    p.add_argument(
        "--bptt-checkpoint",
        type=_checkpoint_steps,
        metavar="K",
        help="keep the state every K steps and recompute the rest in the backward pass: "
        "memory O(T/K + K) for one extra forward pass; 'auto': K = ceil(sqrt(T))",
    )
    p.add_argument(
        "--tbptt",
        type=_positive_int,
        metavar="K",
        help="truncated BPTT: chunks of K steps, the recurrent state carried from one to the "
        "next and the gradient cut there (chars: the chunk length, instead of --seq-len)",
    )
    p.add_argument("--damping", type=float, default=1.0, help="hessian-free: initial lambda")
    p.add_argument("--cg-iters", type=int, default=50, help="hessian-free: CG steps at most")
    p.add_argument(
        "--curvature-batch", type=int, help="hessian-free: examples per batch for G v (all)"
    )
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("predict", help="class probabilities of images from an image checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("sample", help="generate text from a chars-task checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--length", type=_count, default=200)
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--temperature", type=_positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("compile", help="show the generated code or what the passes did")
    _common(p)
    p.add_argument("--backend", default="numba", choices=["reference", "numba", "cupy", "auto"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--graph", default="grad", choices=["forward", "grad", "hvp", "gnvp"])
    p.add_argument("--emit", choices=["numba", "ir"], help="print the kernel source or the IR")
    p.add_argument("--explain", action="store_true", help="list what each pass did")
    p.add_argument("--disable", action="append", metavar="PASS", help="switch a pass off")
    p.set_defaults(run=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except GraphRNNError as e:
        print(str(e), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `graphrnn check ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a full disk or a file that vanished between checks
        where = f" {e.filename}" if e.filename else ""
        print(
            f"error: cannot use{where}: {e.strerror or e}; check the path, "
            "its permissions and the free disk space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
