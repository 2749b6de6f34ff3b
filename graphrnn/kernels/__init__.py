"""Every op's kernel, written once as loop nests (graphrnn/loopnest.py), one module per op
family like graphrnn/ir/ops/. Importing the package attaches each kernel to its op record
(`Op.kernel`); both compiled backends print these nests, Numba as loops and CUDA as
grid-stride kernels.

Ops without a kernel here: the elementwise ops (their `scalar` formula is fused by
`fused_nest`), the leaves, and the whole-array ops (const, batch_size, axis_size), which each
backend fills directly.
"""

from graphrnn.kernels import axis, conv, grid, linalg, nn, structure  # noqa: F401
from graphrnn.kernels.elementwise import fused_nest

__all__ = ["fused_nest"]
