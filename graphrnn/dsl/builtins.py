"""The functions a model file can call, mapped onto IR ops.

Most are one op each; `zeros`/`ones` make constants, `dim(x)` is the size of x's last
dimension (a compile-time integer), and the reducing `sum`/`mean` of one vector.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrnn.ir import ops  # noqa: F401  (registers the primitives)
from graphrnn.ir.registry import OPS

# The ops a model file calls by the op's own name (flagged `builtin` on the record), with
# their arity from the registry, so the language and the IR cannot disagree; every other op
# is internal (delays, reads at a step, gradients) and cannot be called.
CALLABLE_OPS = tuple(sorted(name for name, op in OPS.items() if op.builtin))

# DSL name -> (IR op, number of arguments; None for any number)
OP_FUNCTIONS: dict[str, tuple[str, int | None]] = {
    name: (name, OPS[name].arity) for name in CALLABLE_OPS
}

# DSL name -> (positional parameters, keyword parameters with defaults): builtins that take
# keyword arguments or attributes (see expressions._keyword_builtin). Positional parameters
# after the first one or two values are compile-time integers (kernel, block sizes).
KEYWORD_FUNCTIONS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "conv2d": (("x", "w"), {"stride": 1, "padding": 0, "dilation": 1}),
    "maxpool2d": (("x", "kernel"), {"stride": None, "padding": 0}),
    "avgpool2d": (("x", "kernel"), {"stride": None, "padding": 0}),
    "bias2d": (("x", "b"), {}),
    "batchnorm2d": (("x", "gamma", "beta"), {"eps": 1e-5}),
    "patches": (("x", "ph", "pw"), {}),
    "grid": (("v",), {}),
}

CONSTANT_FUNCTIONS = {"zeros": 0.0, "ones": 1.0}

SPECIAL_FUNCTIONS = {"dim", "slice"}


@dataclass(frozen=True)
class Builtin:
    """A builtin function as a value, so `act = tanh` can be passed to a definition."""

    name: str

    def __str__(self) -> str:
        return self.name


def is_builtin(name: str) -> bool:
    return (
        name in OP_FUNCTIONS
        or name in CONSTANT_FUNCTIONS
        or name in SPECIAL_FUNCTIONS
        or name in KEYWORD_FUNCTIONS
    )
