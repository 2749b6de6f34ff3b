"""The public model object: a folded graph with bound sizes and initialised parameters."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from graphrnn.autodiff import grad
from graphrnn.compiled import Compiled, check_fixed_steps
from graphrnn.dsl import parse, parse_file
from graphrnn.dsl.lower import MODES, lower_model
from graphrnn.errors import DataError, DSLError, GraphRNNError
from graphrnn.initializers import initialize
from graphrnn.ir.graph import Graph
from graphrnn.memory import check_fits, elements
from graphrnn.running_stats import initial_state
from graphrnn.schedule import schedule
from graphrnn.second_order import gnvp_graph, hvp_graph
from graphrnn.unroll import unroll

BACKENDS = ("reference", "numba", "cupy")


class Model:
    """A model file lowered for given sizes: `graph`, initial `params`, `compile`, `unroll`.

    `state` holds the batch norms' running statistics (mean 0, variance 1 to start; empty
    without batch norm): not trained, but passed with the parameters to the evaluation graph
    (`eval_graph`, `compile(..., mode="eval")`). `lower(mode)` lowers the model file again."""

    def __init__(
        self,
        graph: Graph,
        sizes: dict[str, int],
        seed: int,
        path: str | None = None,
        lower: Callable[[str], Graph] | None = None,
    ):
        self.graph = graph
        self.sizes = dict(sizes)
        self.seed = seed
        self.path = path
        schedule(graph.roots())
        self.params = self.init_params(seed)
        self.state = initial_state(graph)
        self._lower = lower
        self._eval_graph: Graph | None = None
        self.text: str | None = None  # the model file's text, stored in checkpoints
        self.meta: dict = {}  # a checkpoint's meta record, for models from load_checkpoint
        self.state_saved = False  # load_checkpoint: the checkpoint held running statistics

    @property
    def name(self) -> str:
        return self.graph.name

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Fresh parameters drawn from each parameter's declared initialiser; sizes whose
        parameters cannot fit in memory are refused with the figure before drawing."""
        params = self.graph.params
        check_fits(
            f"the parameters of model '{self.name}'",
            {_param_label(n, p): elements(p.shape) * 8 for n, p in params.items()},
            f"use smaller sizes (now {', '.join(f'{k}={v}' for k, v in self.sizes.items())})",
        )
        result = {}
        for name, node in params.items():
            try:
                result[name] = initialize(name, node.shape, node.attrs["init"], seed)
            except DSLError:
                raise
            except GraphRNNError as e:
                raise DSLError(str(e), node.loc) from None
        return result

    def compile(
        self,
        backend: str = "reference",
        dtype: str = "float64",
        bptt_checkpoint: int | str | None = None,
        mode: str = "train",
        **options,
    ):
        """Forward and loss_and_grad functions for one backend and dtype.

        `bptt_checkpoint=k` (or "auto" for k ~ sqrt(T)) bounds BPTT memory by keeping only the
        states at every k-th step and recomputing the rest (graphrnn/segmented/).
        `mode="eval"` compiles `eval_graph()`: batch norms use the running statistics."""
        graph = self.graph if mode == "train" else self.eval_graph(mode)
        if bptt_checkpoint is not None:
            from graphrnn.segmented.driver import SegmentedBPTT

            def build(graph: Graph, **extra) -> Compiled:
                return compile_graph(graph, backend, dtype, **{**options, **extra})

            grads = options.get("input_grads", True)
            return SegmentedBPTT(graph, bptt_checkpoint, build, input_grads=grads)
        return compile_graph(graph, backend, dtype, **options)

    def unroll(self, tau: int | dict[str, int]) -> Graph:
        """The explicit acyclic graph for `tau` steps (or a length per axis)."""
        sizes = tau if isinstance(tau, dict) else {a: tau for a in self.graph.axes}
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes.values()):
            raise GraphRNNError(f"unroll lengths must be positive integers, got {sizes}")
        check_fixed_steps(self.graph, sizes)
        return unroll(self.graph, sizes)

    def grad_graph(self) -> Graph:
        """The folded adjoint graph (BPTT as a graph whose recurrences run backwards)."""
        return grad(self.graph)

    def hvp_graph(self) -> Graph:
        """The folded graph of the Hessian-vector product (graphrnn/second_order.py)."""
        return hvp_graph(self.graph)

    def gnvp_graph(self) -> Graph:
        """The folded graph of the Gauss-Newton-vector product (graphrnn/second_order.py)."""
        return gnvp_graph(self.graph)

    def eval_graph(self, mode: str = "eval") -> Graph:
        """The model lowered for evaluation: each batch norm normalises with its running
        statistics (leaves `<bn>.running_mean`, `<bn>.running_var` among the graph's params,
        listed in `graph.state_names`, never differentiated), so every example is computed
        on its own. The same graph as `graph` when the model has no batch norm."""
        if mode not in MODES:
            raise GraphRNNError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "train" or not self.graph.batchnorms:
            return self.graph
        if self._eval_graph is None:
            if self._lower is None:
                raise GraphRNNError(
                    "this Model was built from a graph alone, so it cannot be lowered again "
                    "for evaluation; make it with gr.load or gr.loads"
                )
            graph = self._lower("eval")
            schedule(graph.roots())
            self._eval_graph = graph
        return self._eval_graph


def _param_label(name: str, node) -> str:
    return f"'{name}' {list(node.shape)}" + (f" at {node.loc}" if node.loc else "")


_MODULES = {"numba": "numba_cpu", "cupy": "cupy_gpu"}


def compile_graph(graph: Graph, backend: str, dtype: str, **options) -> Compiled:
    """Forward and loss_and_grad of any graph (a model's, or one derived from it)."""
    if dtype not in ("float32", "float64"):
        raise GraphRNNError(f"dtype must be float32 or float64, not {dtype!r}")
    if backend == "reference":
        from graphrnn.backends import reference

        return Compiled(graph, dtype, reference.run, backend, **options)
    if backend in BACKENDS:
        from importlib import import_module

        module = import_module(f"graphrnn.backends.{_MODULES[backend]}")
        return module.compile(graph, dtype, **options)
    raise GraphRNNError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def load(path: str | Path, seed: int = 0, model: str | None = None, **sizes: int) -> Model:
    """Parse a model file, bind its sizes, check it, and initialise its parameters."""
    module = parse_file(str(path))
    lower = partial(lower_model, module, sizes, model)
    result = Model(lower("train"), sizes, seed, str(path), lower)
    result.text = module.source.text
    return result


def loads(
    text: str, seed: int = 0, model: str | None = None, path: str = "<string>", **sizes
) -> Model:
    """`load` from a string, for models written inline (tests, notebooks)."""
    module = parse(text, path)
    lower = partial(lower_model, module, sizes, model)
    result = Model(lower("train"), sizes, seed, None, lower)
    result.text = text
    return result


def load_checkpoint(path: str | Path) -> Model:
    """The model a training checkpoint was written for, with its trained parameters (and
    batch norms' running statistics in `state`) and the checkpoint's meta record in `meta`.

    The model is rebuilt from the model text stored in the checkpoint, so it needs no model
    file and cannot silently pair the weights with equations edited since; a warning says
    when the file named in the checkpoint now differs. Checkpoints written before the text
    was stored fall back to that file."""
    from graphrnn.train.checkpoint import load_checkpoint as read_checkpoint

    params, _, meta, state = read_checkpoint(path, with_state=True)
    sizes = meta.get("sizes")
    if not isinstance(sizes, dict):
        raise DataError(f"{path} records no model sizes; give a checkpoint that train wrote")
    name, file = meta.get("model_name"), meta.get("model")
    text = meta.get("model_text")
    if text is None:
        if not file or not Path(file).is_file():
            raise DataError(
                f"{path} stores no model text (it was written by an older graphrnn) and its "
                f"model file {file!r} is gone; restore the file at that path"
            )
        model = load(file, model=name, **sizes)
    else:
        model = loads(text, model=name, path=f"{file or path} (as stored in {path})", **sizes)
        model.path = file
        _warn_if_changed(file, text, path)
    _take_trained(model, params, state, path)
    model.meta = meta
    return model


def _warn_if_changed(file: str | None, text: str, checkpoint) -> None:
    try:
        now = Path(file).read_text(encoding="utf-8") if file else None
    except (OSError, UnicodeDecodeError):
        now = None
    if now is not None and now != text:
        warnings.warn(
            f"the model file {file} has changed since {checkpoint} was written; using the "
            "model stored in the checkpoint (retrain to use the new equations)",
            stacklevel=3,
        )


def _take_trained(model: Model, params: dict, state: dict, path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.params.items()}
    found = {k: tuple(v.shape) for k, v in params.items()}
    if expected != found:
        raise DataError(
            f"{path} holds parameters {found} but its model has {expected}; the checkpoint "
            "does not belong to this model"
        )
    model.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if state and set(state) != set(model.state):
        raise DataError(
            f"{path} holds running statistics {sorted(state)} but its model has "
            f"{sorted(model.state)}; the checkpoint does not belong to this model"
        )
    if state:
        model.state = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    model.state_saved = bool(state)
