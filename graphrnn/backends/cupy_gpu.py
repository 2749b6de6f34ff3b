"""The CuPy backend: the graph's program (cuda_source.py) run on an NVIDIA GPU.

Per call the executor uploads each leaf once, allocates every buffer from CuPy's memory pool,
then walks the program: generated kernels (one `cupy.RawModule` per graph, compiled by NVRTC
on first use; CuPy caches the binary on disk under ~/.cupy/kernel_cache), GEMMs through
`cupy.dot` (cuBLAS), buffer fills, and recurrences as host loops over the steps that only
enqueue work on the current stream. Nothing synchronises until the outputs are copied back
to NumPy at the end.

The executor talks to the GPU through a small device object (`CupyDevice`); the tests swap in
one that runs the same generated source compiled as C++ on the CPU, so the program, the
kernels' indexing and this module's launch logic are exercised on machines without a GPU.

Without CuPy or without a GPU `compile` raises a GraphRNNError saying so; `pick_backend`
chooses "cupy" where it can run and "numba" otherwise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np

from graphrnn.backends.cuda_source import (
    Fill,
    Launch,
    MatVec,
    Program,
    StepLoop,
    WeightGrad,
    build_program,
)
from graphrnn.compiled import Compiled
from graphrnn.errors import GraphRNNError
from graphrnn.ir.graph import Graph
from graphrnn.ir.registry import EvalEnv

INSTALL = "pip install cupy-cuda12x"
BLOCK = 256
MAX_GRID = 65535


# ---- is there a GPU? ---------------------------------------------------------------------
def gpu_status() -> tuple[bool, str]:
    """(usable, why): whether CuPy imports and sees at least one NVIDIA GPU, in words."""
    try:
        import cupy
    except ImportError:
        return False, f"CuPy is not installed ({INSTALL}, or cupy-cuda13x for CUDA 13)"
    except Exception as e:  # a broken install: missing CUDA libraries and the like
        return False, f"CuPy failed to import: {_first_line(e)}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when there is no driver or no device
        return False, f"CuPy {cupy.__version__} sees no NVIDIA GPU ({_first_line(e)})"
    if count < 1:
        return False, f"CuPy {cupy.__version__} sees no NVIDIA GPU"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        name = "an NVIDIA GPU"
    return True, f"CuPy {cupy.__version__} on {name}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def pick_backend(say: Callable[[str], object] | None = None) -> str:
    """The backend `auto` stands for: "cupy" where CuPy sees a GPU, else "numba". `say`, if
    given, receives one line telling which was chosen and why."""
    usable, why = gpu_status()
    backend = "cupy" if usable else "numba"
    if say is not None:
        if usable:
            say(f"backend auto: cupy ({why})")
        else:
            say(f"backend auto: numba, on the CPU ({why})")
    return backend


# ---- the device --------------------------------------------------------------------------
Kernel = Callable[[tuple, tuple, tuple], None]
_MODULES: dict[str, object] = {}


class CupyDevice:
    """Arrays, kernels and GEMMs on the current CUDA device, through CuPy."""

    name = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy

    def kernels(self, source: str, names: list[str]) -> dict[str, Kernel]:
        """The named kernels of `source`, compiled once per process (and cached on disk by
        CuPy across processes)."""
        key = hashlib.sha256(source.encode()).hexdigest()
        module = _MODULES.get(key)
        if module is None:
            module = _MODULES[key] = self.cp.RawModule(code=source)
        return {name: module.get_function(name) for name in names}

    def upload(self, array: np.ndarray):
        return self.cp.asarray(array)

    def empty(self, shape: tuple[int, ...], dtype: str):
        return self.cp.empty(shape, dtype=dtype)

    def download(self, array) -> np.ndarray:
        return self.cp.asnumpy(array)

    def dot(self, a, b, out) -> None:
        self.cp.dot(a, b, out=out)

    def fill(self, array, value: float) -> None:
        array.fill(value)


# ---- the executor ------------------------------------------------------------------------
class GpuExecutor:
    """Runs a graph's program; programs (and their kernels) are built once per graph."""

    def __init__(self, dtype: str, device=None):
        self.dtype = dtype
        self.device = device if device is not None else CupyDevice()
        self.loaded: dict[int, tuple[Program, dict[str, Kernel]]] = {}

    def program(self, graph: Graph) -> Program:
        return self._load(graph)[0]

    def source(self, graph: Graph) -> str:
        """The CUDA C of every kernel of the graph, as one translation unit."""
        return self.program(graph).source()

    def _load(self, graph: Graph) -> tuple[Program, dict[str, Kernel]]:
        if id(graph) not in self.loaded:
            program = build_program(graph, self.dtype)
            names = list(program.kernels)
            kernels = self.device.kernels(program.source(), names) if names else {}
            self.loaded[id(graph)] = (program, kernels)
        return self.loaded[id(graph)]

    def __call__(self, graph: Graph, env: EvalEnv, leaves: dict[int, np.ndarray]):
        program, kernels = self._load(graph)
        device = self.device
        sizes = {f"S_{a}": int(env.sizes[a]) for a in program.axes}
        sizes["B"] = int(env.batch)
        values = {}
        for leaf in program.leaves:
            array = np.ascontiguousarray(leaves[leaf.id], dtype=self.dtype)
            values[leaf.id] = device.upload(array)
        for node_id, dims in program.buffers.items():
            shape = tuple(d if isinstance(d, int) else sizes[d] for d in dims)
            values[node_id] = device.empty(shape, self.dtype)
        head = tuple(np.int64(sizes[s]) for s in program.size_args())
        run = _Runner(device, kernels, values, sizes, head)
        for action in run.bind(program.steps, None):
            action(0)
        return {r.id: device.download(values[r.id]) for r in program.roots}


class _Runner:
    """Turns the program's steps into closures over this call's buffers and sizes."""

    def __init__(self, device, kernels: dict[str, Kernel], values: dict, sizes: dict, head):
        self.device = device
        self.kernels = kernels
        self.values = values
        self.sizes = sizes
        self.head = head

    def bind(self, steps, loop_axis: str | None) -> list[Callable[[int], None]]:
        actions = []
        for s in steps:
            if isinstance(s, Launch):
                actions.append(self._launch(s))
            elif isinstance(s, MatVec):
                actions.append(self._matvec(s, loop_axis))
            elif isinstance(s, WeightGrad):
                actions.append(self._weight_grad(s))
            elif isinstance(s, Fill):
                actions.append(self._fill(s))
            elif isinstance(s, StepLoop):
                actions.append(self._loop(s))
            else:
                raise TypeError(f"unknown program step {s!r}")
        return actions

    def _launch(self, s: Launch):
        kernel = self.kernels[s.kernel]
        n = math.prod(d if isinstance(d, int) else self.sizes[d] for d in s.extent)
        grid, block = (min(max(1, -(-n // BLOCK)), MAX_GRID),), (BLOCK,)
        arrays = tuple(self.values[i] for i in s.buffers)
        head = self.head

        def launch(step: int) -> None:
            kernel(grid, block, head + (np.int64(step),) + arrays)

        return launch

    def _matvec(self, s: MatVec, loop_axis: str | None):
        if not s.uses_gemm(self.sizes["B"]):
            return self._launch(s.small)
        v, dot = self.values, self.device.dot
        at = v[s.matrix].reshape(s.m, s.k).T
        if loop_axis is None:
            vector, out = v[s.vector].reshape(-1, s.k), v[s.out].reshape(-1, s.m)
            return lambda step: dot(vector, at, out)
        steps = self.sizes[f"S_{loop_axis}"]
        vector = v[s.vector].reshape(steps, -1, s.k)
        out = v[s.out].reshape(steps, -1, s.m)
        return lambda step: dot(vector[step], at, out[step])

    def _weight_grad(self, s: WeightGrad):
        v = self.values
        a, b = v[s.a].reshape(-1, s.m).T, v[s.b].reshape(-1, s.k)
        out = v[s.out].reshape(s.m, s.k)
        return lambda step: self.device.dot(a, b, out)

    def _fill(self, s: Fill):
        value = float(s.value if not isinstance(s.value, str) else self.sizes[s.value])
        array = self.values[s.out]
        return lambda step: self.device.fill(array, value)

    def _loop(self, s: StepLoop):
        body = self.bind(s.body, s.axis)
        steps = self.sizes[f"S_{s.axis}"]
        order = range(steps) if s.forward else range(steps - 1, -1, -1)

        def loop(_: int) -> None:
            for step in order:
                for action in body:
                    action(step)

        return loop


def compile(
    graph: Graph, dtype: str, input_grads: bool = True, passes: bool = True, disable=()
) -> Compiled:
    """Forward and loss_and_grad on the GPU; optimisation passes on by default, `disable`
    names passes to rule out. Raises GraphRNNError where CuPy or a GPU is missing."""
    usable, why = gpu_status()
    if not usable:
        raise GraphRNNError(
            f"the cupy backend needs an NVIDIA GPU and CuPy ({INSTALL}); {why}. "
            "Use the numba backend on the CPU."
        )
    return Compiled(graph, dtype, GpuExecutor(dtype), "cupy", input_grads, passes, disable)
