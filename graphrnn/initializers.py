"""Parameter initialisers, by the name a model file gives after `~`.

Fans follow the usual convention for a matrix [out, in] (fan_in = in, fan_out = out); for a
convolution kernel [F, C, kh, kw] they are multiplied by the receptive field kh*kw. Each
parameter draws from its own generator seeded by (seed, name), so adding a parameter does not
change the others.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable

import numpy as np

from graphrnn.errors import GraphRNNError


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def zeros(rng, shape):
    """All 0."""
    return np.zeros(shape)


def ones(rng, shape):
    """All 1."""
    return np.ones(shape)


def constant(rng, shape, value=0.0):
    """All equal to value."""
    return np.full(shape, float(value))


def uniform(rng, shape, scale=0.05):
    """U(-scale, scale)."""
    return rng.uniform(-scale, scale, shape)


def normal(rng, shape, std=0.01):
    """N(0, std^2)."""
    return rng.normal(0.0, std, shape)


def glorot_uniform(rng, shape, gain=1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def glorot_normal(rng, shape, gain=1.0):
    """N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * np.sqrt(2.0 / (fan_in + fan_out)), shape)


SQRT2 = float(np.sqrt(2.0))


def kaiming_uniform(rng, shape, gain=SQRT2):
    """U(-a, a) with a = gain * sqrt(3 / fan_in)."""
    limit = gain * np.sqrt(3.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, shape)


def kaiming_normal(rng, shape, gain=SQRT2):
    """N(0, s^2) with s = gain / sqrt(fan_in)."""
    return rng.normal(0.0, gain / np.sqrt(_fans(shape)[0]), shape)


def orthogonal(rng, shape, gain=1.0):
    """gain times a (semi-)orthogonal matrix (Saxe et al. 2014), from the QR factors of a
    Gaussian one."""
    if len(shape) < 2:
        raise GraphRNNError(
            f"orthogonal initialisation needs a matrix, but the parameter has shape "
            f"{list(shape)}; use it for a matrix, or e.g. uniform(0.1) or zeros here"
        )
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return gain * q[:rows, :cols].reshape(shape)


INITIALIZERS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        zeros,
        ones,
        constant,
        uniform,
        normal,
        glorot_uniform,
        glorot_normal,
        kaiming_uniform,
        kaiming_normal,
        orthogonal,
    )
}
INITIALIZERS["kaiming"] = kaiming_normal


# Arguments that scale a distribution must be positive; every argument must be finite.
_POSITIVE = {"scale", "std", "gain"}


def signature(kind: str) -> str:
    """The initialiser's arguments as a model file writes them: `uniform(scale = 0.05)`."""
    fn = INITIALIZERS[kind]
    params = list(inspect.signature(fn).parameters.values())[2:]
    text = f"{kind}({', '.join(f'{p.name} = {p.default:g}' for p in params)})"
    doc = (fn.__doc__ or "").strip().splitlines()
    return f"{text}, {doc[0].rstrip('.')}" if doc else text


def bind_arguments(kind: str, args: tuple, kwargs: dict) -> tuple:
    """The initialiser's arguments in order, defaults filled in; a GraphRNNError names the
    initialiser's signature when an argument is unknown, missing, repeated or out of range
    (`uniform(-1)`), so nothing a model file writes is dropped silently."""
    fn = INITIALIZERS[kind]
    try:
        bound = inspect.signature(fn).bind(None, None, *args, **kwargs)
    except TypeError as exc:
        raise GraphRNNError(f"{kind}(): {exc}; it is {signature(kind)}") from None
    bound.apply_defaults()
    values = dict(list(bound.arguments.items())[2:])
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise GraphRNNError(f"{kind}(): {key} must be a finite number, got {value!r}")
        if key in _POSITIVE and not value > 0:
            raise GraphRNNError(
                f"{kind}(): {key} must be positive, got {value!r}; it is {signature(kind)}"
            )
    return tuple(values.values())


def initialize(name: str, shape, init: tuple, seed: int) -> np.ndarray:
    """init = (initialiser name, positional args); e.g. ("constant", (1.0,)). A draw whose
    scale overflows (`glorot_uniform(1e308)`) is a GraphRNNError, not a NumPy one."""
    kind, args = init
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            value = np.asarray(INITIALIZERS[kind](rng, tuple(shape), *args), dtype=np.float64)
    except (ValueError, OverflowError) as exc:
        raise GraphRNNError(
            f"{_call_text(kind, args)} cannot initialise {name} ({exc}); use a smaller scale"
        ) from None
    if not np.all(np.isfinite(value)):
        raise GraphRNNError(
            f"{_call_text(kind, args)} gives {name} non-finite values; use a smaller scale"
        )

    return value


def _call_text(kind: str, args: tuple) -> str:
    return f"{kind}({', '.join(f'{a:g}' for a in args)})"
