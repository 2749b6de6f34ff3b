"""Parameter initialisers, by the name a model file gives after `~`.

Fans follow the usual convention for a matrix [out, in] (fan_in = in, fan_out = out); for a
convolution kernel [F, C, kh, kw] they are multiplied by the receptive field kh*kw. Each
parameter draws from its own generator seeded by (seed, name), so adding a parameter does not
change the others.
"""

from __future__ import annotations

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
    return np.zeros(shape)


def ones(rng, shape):
    return np.ones(shape)


def constant(rng, shape, value=0.0):
    return np.full(shape, float(value))


def uniform(rng, shape, scale=0.05):
    return rng.uniform(-scale, scale, shape)


def normal(rng, shape, std=0.01):
    return rng.normal(0.0, std, shape)


def glorot_uniform(rng, shape, gain=1.0):
    fan_in, fan_out = _fans(shape)
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def glorot_normal(rng, shape, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * np.sqrt(2.0 / (fan_in + fan_out)), shape)


SQRT2 = float(np.sqrt(2.0))


def kaiming_uniform(rng, shape, gain=SQRT2):
    limit = gain * np.sqrt(3.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, shape)


def kaiming_normal(rng, shape, gain=SQRT2):
    return rng.normal(0.0, gain / np.sqrt(_fans(shape)[0]), shape)


def orthogonal(rng, shape, gain=1.0):
    """Saxe et al. 2014: a (semi-)orthogonal matrix from the QR factors of a Gaussian one."""
    if len(shape) < 2:
        raise GraphRNNError("orthogonal initialisation needs a matrix")
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


def initialize(name: str, shape, init: tuple, seed: int) -> np.ndarray:
    """init = (initialiser name, positional args); e.g. ("constant", (1.0,))."""
    kind, args = init
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.asarray(INITIALIZERS[kind](rng, tuple(shape), *args), dtype=np.float64)
