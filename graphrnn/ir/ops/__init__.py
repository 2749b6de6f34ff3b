"""The primitives, one module per family. Importing this package registers them all."""

from graphrnn.ir.ops import axis, conv, elementwise, grid, leaf, linalg, nn, structure  # noqa: F401
