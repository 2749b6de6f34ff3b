"""graphrnn: recurrent networks written as cyclic graphs, compiled to training code.

import graphrnn as gr
model = gr.load("models/elman.grnn", I=8, H=16, O=4)
fn = model.compile(backend="reference", dtype="float64")
loss, grads = fn.loss_and_grad(model.params, {"x": x}, {"y": y})
"""

from graphrnn.errors import DataError, DSLError, GraphRNNError
from graphrnn.ir import ops as _ops  # noqa: F401  (registers the primitives)
from graphrnn.model import Model, load, load_checkpoint, loads
from graphrnn.version import __version__ as __version__  # re-exported


def render(model, unroll: int | None = None, path: str | None = None, **kwargs):
    """Draw the folded graph (or the graph unrolled over `unroll` steps); see graphrnn.viz."""
    from graphrnn.viz import render as _render

    return _render(model, unroll=unroll, path=path, **kwargs)


__all__ = [
    "load",
    "loads",
    "load_checkpoint",
    "Model",
    "render",
    "GraphRNNError",
    "DSLError",
    "DataError",
]
