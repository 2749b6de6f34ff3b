"""The CuPy backend against the reference interpreter: float64 to 1e-10 relative, float32 to
1e-4, forward outputs, the loss and every gradient.

Two ways of running the same executor (graphrnn/backends/cupy_gpu.py):

- On a machine where CuPy sees an NVIDIA GPU: `model.compile("cupy")` on every shipped model.
  Elsewhere these tests are skipped, with the reason.
- Everywhere: an emulated device that compiles the generated CUDA C as C++ with g++ (a
  prelude defines `__global__` away and makes blockIdx/threadIdx/blockDim/gridDim globals)
  and runs each kernel on the CPU for a few blocks of a few threads, so the grid-stride loops
  really stride; GEMMs are np.dot and buffers start as NaN, so an element a kernel forgot to
  write shows up. This checks the program, the kernels' indexing and broadcasting, the
  recurrences' step loops and the executor's launch logic without a GPU; what it cannot check
  is CuPy itself (NVRTC, cuBLAS, the driver) and true parallel execution.

Emulated builds are cached under GRAPHRNN_CACHE_DIR (or the system temp dir), by source.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.backends import cupy_gpu
from graphrnn.backends.cuda_source import MatVec, StepLoop
from graphrnn.backends.cupy_gpu import GpuExecutor, gpu_status, pick_backend
from graphrnn.check import random_data
from graphrnn.compiled import Compiled
from graphrnn.dsl import parse_file
from graphrnn.errors import GraphRNNError
from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import Context
from graphrnn.ir.ops import conv
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(ROOT.glob("models/*.grnn"))
SMALL = {"I": 3, "H": 4, "O": 3, "L": 2}
# Sizes with large defaults (the paper's network of spatial_rnn_sex.grnn), made small.
SHRINK = {"HI": 32, "WI": 32, "C1": 2, "C2": 2, "C3": 3, "C4": 2, "H1": 3, "H2": 2}

GPU_OK, GPU_WHY = gpu_status()
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"no GPU / CuPy not installed: {GPU_WHY}")


def load_small(path: Path):
    module = parse_file(str(path))
    model = next(i for i in module.items if type(i).__name__ == "ModelDef")
    sizes = {p.name: SMALL.get(p.name, 3) for p in model.params if p.default is None}
    sizes.update({p.name: SHRINK[p.name] for p in model.params if p.name in SHRINK})
    return gr.load(path, seed=1, **sizes)


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(actual - expected).max(initial=0.0) / scale
    assert error < rtol, f"{what}: relative error {error:.3e}"


def compare(fast: Compiled, graph: Graph, rtol, params, inputs, targets):
    """`fast` against the reference on the forward outputs, the loss and every gradient."""
    params = {k: np.asarray(v).astype(fast.dtype) for k, v in params.items()}
    inputs = {k: np.asarray(v).astype(fast.dtype) for k, v in inputs.items()}
    targets = {k: np.asarray(v).astype(fast.dtype) for k, v in targets.items()}
    reference = Compiled(graph, "float64", _reference_run, "reference")
    expected, actual = reference.forward(params, inputs), fast.forward(params, inputs)
    assert set(actual) == set(expected)
    for name in expected:
        assert_close(actual[name], expected[name], rtol, f"forward {name}")
    if graph.loss is None:
        return
    loss0, grads0 = reference.loss_and_grad(params, inputs, targets)
    loss1, grads1 = fast.loss_and_grad(params, inputs, targets)
    assert_close(loss1, loss0, rtol, "loss")
    assert set(grads1) == set(grads0)
    for name in grads0:
        assert_close(grads1[name], grads0[name], rtol, f"gradient of {name}")


def _reference_run(graph, env, leaves):
    from graphrnn.backends import reference

    return reference.run(graph, env, leaves)


def compare_model(fast: Compiled, model, rtol, tau: int = 5, batch: int = 3):
    inputs, targets = random_data(model, tau, batch, seed=2)
    compare(fast, model.graph, rtol, model.params, inputs, targets)


# ---- the emulated device -----------------------------------------------------------------
PRELUDE = r"""
#include <math.h>
struct graphrnn_dim3 { unsigned int x, y, z; };
static graphrnn_dim3 blockIdx, blockDim, threadIdx, gridDim;
extern "C" void graphrnn_thread(unsigned int b, unsigned int t, unsigned int nb, unsigned int nt)
{
    blockIdx.x = b; threadIdx.x = t; gridDim.x = nb; blockDim.x = nt;
}
#define __global__
"""


def emulation_dir() -> Path:
    base = os.environ.get("GRAPHRNN_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "graphrnn")
    path = Path(base) / "cuda-emulated"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_emulated(source: str) -> Path:
    """The source as a shared library for the CPU (cached by content)."""
    digest = hashlib.sha256((PRELUDE + source).encode()).hexdigest()[:24]
    library = emulation_dir() / f"k{digest}.so"
    if library.exists():
        return library
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.fail("g++ is needed to run the generated CUDA C on the CPU")
    tmp = library.with_suffix(f".{os.getpid()}.{id(source)}")
    cpp = tmp.with_suffix(".cpp")
    cpp.write_text(PRELUDE + source)
    built = subprocess.run(
        [gxx, "-O0", "-shared", "-fPIC", "-w", "-o", str(tmp), str(cpp)],
        capture_output=True,
        text=True,
    )
    cpp.unlink()
    assert built.returncode == 0, f"g++ failed on the generated source:\n{built.stderr}"
    os.replace(tmp, library)
    return library


class EmulatedDevice:
    """The device interface of cupy_gpu.CupyDevice, on the CPU. `log` records every call
    in order, so tests can see what happens inside the step loops."""

    name = "emulated"

    def __init__(self, blocks: int = 2, threads: int = 3):
        self.blocks = blocks
        self.threads = threads
        self.log: list[str] = []

    def kernels(self, source: str, names: list[str]):
        lib = ctypes.CDLL(str(build_emulated(source)))
        thread = lib.graphrnn_thread
        thread.restype = None
        result = {}
        for name in names:
            fn = getattr(lib, name)
            fn.restype = None
            result[name] = self._launcher(name, thread, fn)
        return result

    def _launcher(self, name, thread, fn):
        def launch(grid, block, args):
            assert len(grid) == len(block) == 1 and grid[0] >= 1 and block[0] >= 1
            self.log.append(f"launch {name}")
            cargs = []
            for a in args:
                if isinstance(a, np.integer):
                    cargs.append(ctypes.c_longlong(int(a)))
                else:
                    assert a.flags.c_contiguous and a.dtype in (np.float32, np.float64)
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
            blocks, threads = min(grid[0], self.blocks), min(block[0], self.threads)
            for b in range(blocks):
                for t in range(threads):
                    thread(b, t, blocks, threads)
                    fn(*cargs)

        return launch

    def upload(self, array):
        self.log.append("upload")
        return np.array(array, copy=True)

    def empty(self, shape, dtype):
        self.log.append("empty")
        return np.full(shape, np.nan, dtype=dtype)

    def download(self, array):
        self.log.append("download")
        return np.array(array, copy=True)

    def dot(self, a, b, out):
        self.log.append("dot")
        np.dot(a, b, out=out)

    def fill(self, array, value):
        self.log.append("fill")
        array.fill(value)


def emulated(graph: Graph, dtype: str, device: EmulatedDevice | None = None) -> Compiled:
    """What cupy_gpu.compile returns, with the emulated device in place of CuPy."""
    executor = GpuExecutor(dtype, device or EmulatedDevice())
    return Compiled(graph, dtype, executor, "cupy", True, True, ())


@pytest.fixture(scope="module")
def prebuilt():
    """Build every model's emulated kernels in parallel up front (g++ takes ~0.5 s each)."""
    sources = []
    for path in MODELS:
        fast = emulated(load_small(path).graph, "float64")
        graphs = [fast.forward_graph] + ([fast.adjoint] if fast.graph.loss is not None else [])
        sources += [fast.executor.source(fast.prepared(g)) for g in graphs]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(build_emulated, sources))


# ---- emulated: every model, and the harder shapes ----------------------------------------
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_emulated_matches_reference_float64(path, prebuilt):
    model = load_small(path)
    compare_model(emulated(model.graph, "float64"), model, 1e-10)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru_torch"])
def test_emulated_matches_reference_float32(name):
    model = load_small(ROOT / "models" / f"{name}.grnn")
    compare_model(emulated(model.graph, "float32"), model, 1e-4)


def test_emulated_per_step_products_are_gemms_or_kernels_by_batch_size():
    """Inside the recurrence the product with W runs as a kernel for a small batch and as a
    GEMM (np.dot here, cuBLAS on the GPU) for a large one; both match the reference."""
    model = gr.load(ROOT / "models" / "elman.grnn", I=70, H=70, O=5)
    device = EmulatedDevice()
    fast = emulated(model.graph, "float64", device)
    program = fast.executor.program(fast.prepared(fast.adjoint))
    loops = [s for s in program.steps if isinstance(s, StepLoop)]
    per_step = [b for loop in loops for b in loop.body if isinstance(b, MatVec)]
    assert per_step
    for batch in (2, 16):
        device.log.clear()
        compare_model(fast, model, 1e-10, tau=4, batch=batch)
        gemm = per_step[0].uses_gemm(batch)
        assert gemm == (batch == 16)
        small = f"launch {per_step[0].small.kernel}"
        assert (small in device.log) != gemm


LOSS = (
    "mean over i of mean over j of softmax_cross_entropy(f(i, j), k(i, j))"
    " + mse(d(end, end), f(1, end))"
)
GRID = f"""
model Grid(C, H):
    input  p[C] over i, j
    target k[H] over i, j
    input  q[C] over j
    param  A[H, C] ~ glorot_uniform
    param  B[H, H] ~ orthogonal
    d(0) = zeros(H)
    e(j) = tanh(A @ q(j))
    d(i, j) = tanh(A @ p(i, j) + B @ d(i-1, j) + e(j))
    f(0) = zeros(H)
    f(i, j) = relu(B @ f(i, j+1) + d(i, j))
    loss = {LOSS}
"""


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_emulated_two_axes_of_different_lengths(dtype, rtol):
    """Recurrences along i (forward) and j (backward) of a grid, the other axis running
    alongside like the batch; 3 x 5 steps so that an axis mix-up cannot go unnoticed."""
    model = gr.loads(GRID, C=3, H=4)
    rng = np.random.default_rng(0)
    inputs = {"p": rng.normal(size=(3, 5, 2, 3)), "q": rng.normal(size=(5, 2, 3))}
    targets = {"k": rng.dirichlet(np.ones(4), size=(3, 5, 2))}
    fast = emulated(model.graph, dtype)
    compare(fast, model.graph, rtol, model.params, inputs, targets)
    loops = [s for s in fast.executor.program(fast.prepared(fast.adjoint)).steps]
    loops = [(s.axis, s.forward) for s in loops if isinstance(s, StepLoop)]
    assert {("i", True), ("j", False), ("i", False), ("j", True)} <= set(loops)


def _param(name, shape):
    return param_node(name, shape, ("normal", (0.5,)))


def _conv_graph(x, y, logits, params, axes=(), **outputs) -> Graph:
    graph = Graph(
        "convnet",
        axes,
        inputs={"x": x},
        targets={"y": y},
        params={p.name: p for p in params},
        outputs={"logits": logits, **outputs},
        loss=apply("softmax_cross_entropy", logits, y),
    )
    return resolve_aliases(graph)


def _conv_data(graph: Graph, batch: int, steps: int = 1):
    rng = np.random.default_rng(0)
    params = {n: rng.normal(0.0, 0.5, p.shape) for n, p in graph.params.items()}
    x = graph.inputs["x"]
    lead = (steps,) if x.axes else ()
    target = graph.targets["y"]
    classes = target.shape[0]
    y = np.eye(classes)[rng.integers(0, classes, (lead if target.axes else ()) + (batch,))]
    return params, {"x": rng.normal(0.0, 1.0, lead + (batch,) + x.shape)}, {"y": y}


def test_emulated_conv_net_with_every_layer():
    """Strided, padded, dilated convolutions, batch norm, padded max pooling, channel bias."""
    x, y = input_node("x", (2, 9, 8)), input_node("y", (3,), role="target")
    w1, gamma, beta = _param("w1", (4, 2, 3, 2)), _param("gamma", (4,)), _param("beta", (4,))
    w2, b2 = _param("w2", (3, 4, 2, 3)), _param("b2", (3,))
    h = conv.conv2d(x, w1, stride=(1, 2), padding=(2, 1), dilation=2)
    bn = conv.batchnorm2d(h, gamma, beta)
    h = conv.maxpool2d(apply("relu", bn.y), 3, stride=2, padding=1)
    h = conv.add_channel_bias(conv.conv2d(h, w2, stride=(2, 1), padding=1), b2)
    logits = apply("global_avgpool", apply("tanh", h))
    pooled = conv.avgpool2d(x, (2, 3), stride=(2, 1), padding=1)
    graph = _conv_graph(x, y, logits, [w1, gamma, beta, w2, b2], pooled=pooled)
    compare(emulated(graph, "float64"), graph, 1e-10, *_conv_data(graph, batch=4))


def test_emulated_convolutional_recurrence():
    """Convolution and max pooling inside a loop over t (the pooling gradient scatters into
    the current step's slice), weight gradients summed over steps and batch."""
    shape = (3, 5, 4)
    x, y = input_node("x", (2, 5, 4), axes=("t",)), input_node("y", (3,), role="target")
    wx, wh = _param("wx", (3, 2, 3, 3)), _param("wh", (3, 3, 3, 3))
    h = placeholder(shape, Context(frozenset({"t"}), True), name="h")
    previous = apply("delay", h, const(0.0, shape), axis="t", offset=-1)
    pooled = conv.maxpool2d(previous, 3, stride=1, padding=1)
    drive = conv.conv2d(x, wx, padding=1)
    value = apply("tanh", apply("add", drive, conv.conv2d(pooled, wh, padding=1)))
    bind(h, value)
    last = apply("at", value, axis="t", index=-1)
    logits = apply("global_avgpool", conv.maxpool2d(last, 2, stride=1, padding=1))
    graph = _conv_graph(x, y, logits, [wx, wh], axes=("t",))
    compare(emulated(graph, "float64"), graph, 1e-10, *_conv_data(graph, batch=2, steps=4))


def test_step_loops_only_enqueue_work():
    """Inside a recurrence the executor launches kernels and GEMMs and nothing else: no
    copies to or from the host, no allocation; results come back once, at the end."""
    model = load_small(ROOT / "models" / "lstm.grnn")
    device = EmulatedDevice()
    fast = emulated(model.graph, "float64", device)
    inputs, targets = random_data(model, 6, 2, seed=0)
    fast.loss_and_grad(model.params, inputs, targets)
    log = device.log
    first = next(i for i, entry in enumerate(log) if entry.startswith("launch"))
    last_work = max(i for i, e in enumerate(log) if e.startswith("launch") or e == "dot")
    assert all(e in ("upload", "empty") for e in log[:first])
    work = log[first : last_work + 1]
    assert all(e.startswith("launch") or e in ("dot", "fill") for e in work), set(work)
    assert set(log[last_work + 1 :]) == {"download"}


def test_kernels_are_built_once_per_graph():
    model = load_small(ROOT / "models" / "elman.grnn")
    fast = emulated(model.graph, "float64")
    for tau in (2, 7):
        inputs, targets = random_data(model, tau, 3, seed=tau)
        fast.loss_and_grad(model.params, inputs, targets)
    assert len(fast.executor.loaded) == 1


# ---- without a GPU -----------------------------------------------------------------------
@pytest.mark.skipif(GPU_OK, reason="a GPU is available here")
def test_compile_without_gpu_says_what_is_missing():
    model = load_small(ROOT / "models" / "elman.grnn")
    with pytest.raises(GraphRNNError) as error:
        model.compile("cupy")
    message = str(error.value)
    assert "NVIDIA GPU" in message and "pip install cupy-cuda12x" in message
    assert GPU_WHY in message


def test_status_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    usable, why = gpu_status()
    assert not usable and "CuPy is not installed" in why and "cupy-cuda12x" in why
    messages = []
    assert pick_backend(messages.append) == "numba"
    assert messages == [f"backend auto: numba, on the CPU ({why})"]


def test_status_with_cupy_but_no_gpu(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    runtime = types.SimpleNamespace(getDeviceCount=no_device)
    fake = types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    usable, why = gpu_status()
    assert not usable
    assert (
        why
        == "CuPy 14.0.0 sees no NVIDIA GPU (cudaErrorNoDevice: no CUDA-capable device is detected)"
    )
    with pytest.raises(GraphRNNError, match="sees no NVIDIA GPU"):
        cupy_gpu.compile(load_small(ROOT / "models" / "elman.grnn").graph, "float64")


class _FakeRawModule:
    def __init__(self, code: str):
        self.code = code

    def get_function(self, name: str):
        return EmulatedDevice().kernels(self.code, [name])[name]


def fake_cupy() -> types.SimpleNamespace:
    """The part of CuPy's API that CupyDevice uses, on NumPy and the emulated kernels."""
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Emulated GPU"}
    )
    cuda = types.SimpleNamespace(runtime=runtime, Device=lambda: types.SimpleNamespace(id=0))

    def dot(a, b, out=None):
        assert out is not None and out.flags.c_contiguous and out.dtype == a.dtype
        return np.dot(a, b, out=out)

    return types.SimpleNamespace(
        __version__="0-fake",
        cuda=cuda,
        RawModule=lambda code: _FakeRawModule(code),
        asarray=lambda a: np.array(a, copy=True),
        empty=lambda shape, dtype: np.full(shape, np.nan, dtype=dtype),
        asnumpy=lambda a: np.array(a, copy=True),
        dot=dot,
    )


def test_compile_through_cupy_api(monkeypatch):
    """model.compile("cupy") end to end, CupyDevice included, with a stand-in for CuPy."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setattr(cupy_gpu, "_MODULES", {})
    assert gpu_status() == (True, "CuPy 0-fake on Emulated GPU")
    model = load_small(ROOT / "models" / "gru_torch.grnn")
    fast = model.compile("cupy", dtype="float64")
    assert fast.backend == "cupy" and isinstance(fast.executor.device, cupy_gpu.CupyDevice)
    compare_model(fast, model, 1e-10)
    assert len(cupy_gpu._MODULES) == 2  # forward and adjoint, one module each


def test_pick_backend_matches_status():
    messages = []
    assert pick_backend(messages.append) == ("cupy" if GPU_OK else "numba")
    assert len(messages) == 1 and GPU_WHY in messages[0]


# ---- on a GPU ----------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_cupy_matches_reference_float64(path):
    model = load_small(path)
    compare_model(model.compile("cupy", dtype="float64"), model, 1e-10)


@needs_gpu
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_cupy_matches_reference_float32(path):
    model = load_small(path)
    compare_model(model.compile("cupy", dtype="float32"), model, 1e-4)


@needs_gpu
def test_cupy_large_products_use_cublas_and_match():
    model = gr.load(ROOT / "models" / "elman.grnn", I=70, H=70, O=5)
    fast = model.compile("cupy", dtype="float64")
    assert fast.executor.program(fast.prepared(fast.adjoint)).gemms()
    compare_model(fast, model, 1e-10, tau=4, batch=2)


@needs_gpu
def test_cupy_long_sequence_and_large_batch():
    """Enough steps and examples that grids have many blocks and buffers many pages."""
    model = gr.load(ROOT / "models" / "lstm.grnn", I=16, H=96, O=10)
    compare_model(model.compile("cupy", dtype="float64"), model, 1e-10, tau=50, batch=300)


@needs_gpu
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_cupy_two_axes(dtype, rtol):
    model = gr.loads(GRID, C=3, H=4)
    rng = np.random.default_rng(0)
    inputs = {"p": rng.normal(size=(3, 5, 2, 3)), "q": rng.normal(size=(5, 2, 3))}
    targets = {"k": rng.dirichlet(np.ones(4), size=(3, 5, 2))}
    compare(model.compile("cupy", dtype=dtype), model.graph, rtol, model.params, inputs, targets)


@needs_gpu
def test_cupy_conv_recurrence():
    shape = (3, 5, 4)
    x, y = input_node("x", (2, 5, 4), axes=("t",)), input_node("y", (3,), role="target")
    wx, wh = _param("wx", (3, 2, 3, 3)), _param("wh", (3, 3, 3, 3))
    h = placeholder(shape, Context(frozenset({"t"}), True), name="h")
    previous = apply("delay", h, const(0.0, shape), axis="t", offset=-1)
    pooled = conv.maxpool2d(previous, 3, stride=1, padding=1)
    drive = conv.conv2d(x, wx, padding=1)
    bind(h, apply("tanh", apply("add", drive, conv.conv2d(pooled, wh, padding=1))))
    logits = apply("global_avgpool", apply("at", h, axis="t", index=-1))
    graph = _conv_graph(x, y, logits, [wx, wh], axes=("t",))
    compare(cupy_gpu.compile(graph, "float64"), graph, 1e-10, *_conv_data(graph, 2, 4))
