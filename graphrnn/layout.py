"""Conversion between the user's array layout and the aligned layout of the backends.

User layout of a value varying over axes A (in the graph's axis order) and the batch:
[*len(A), B, *shape]; sequences are time-major [T, B, features]. A parameter is just its
shape. The aligned layout inserts a size-1 dimension for every axis (and the batch) the value
does not vary over, so that all values of a graph broadcast against each other.
"""

from __future__ import annotations

import numpy as np

from graphrnn.errors import DataError
from graphrnn.ir.node import Node


def user_shape(node: Node, axes: tuple[str, ...], sizes: dict[str, int], batch: int):
    lead = tuple(sizes.get(a, -1) for a in axes if a in node.axes)
    return lead + ((batch,) if node.batched else ()) + tuple(node.shape)


def describe(node: Node, axes: tuple[str, ...]) -> str:
    """The expected layout in words, e.g. [t, batch, 8]."""
    parts = [a for a in axes if a in node.axes] + (["batch"] if node.batched else [])
    return "[" + ", ".join(parts + [str(d) for d in node.shape]) + "]"


def to_aligned(array: np.ndarray, node: Node, axes: tuple[str, ...]) -> np.ndarray:
    shape, it = [], iter(array.shape)
    for a in axes:
        shape.append(next(it) if a in node.axes else 1)
    shape.append(next(it) if node.batched else 1)
    shape.extend(it)
    return array.reshape(shape)


def from_aligned(array: np.ndarray, node: Node, axes: tuple[str, ...]) -> np.ndarray:
    full = [i for i, a in enumerate(axes) if a not in node.axes]
    if not node.batched:
        full.append(len(axes))
    squeezable = [i for i in full if array.shape[i] == 1]
    array = np.squeeze(array, axis=tuple(squeezable)) if squeezable else array
    return np.array(array, order="C") if not array.flags.writeable else np.ascontiguousarray(array)


def check_array(name: str, array, node: Node, axes: tuple[str, ...], role: str) -> np.ndarray:
    """Turn user data into an array, or explain exactly what is wrong with it."""
    try:
        array = np.asarray(array)
        if array.dtype.kind not in "fiub":
            array = array.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{role} '{name}' is not a numeric array: {e}") from None
    expected_rank = len([a for a in axes if a in node.axes]) + node.batched + len(node.shape)
    layout = describe(node, axes)
    if array.ndim != expected_rank or tuple(array.shape[array.ndim - len(node.shape) :]) != tuple(
        node.shape
    ):
        raise DataError(
            f"{role} '{name}' has shape {list(array.shape)}; expected {layout}"
            + (" (time-major: steps first, then the batch)" if node.axes else "")
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise DataError(f"{role} '{name}' contains NaN or infinity, first at index {where}")
    return array
