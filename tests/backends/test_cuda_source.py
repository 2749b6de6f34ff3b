"""CUDA C generation for the CuPy backend, checked without a GPU.

- Every shipped model's optimised forward and adjoint graphs, in float64 and float32, become
  CUDA C that `nvcc --ptx -arch=sm_80` compiles with every warning an error: one nvcc call per
  model (the four modules share a translation unit through kernel-name prefixes), all models
  at once on a thread pool. nvcc is required: without it these tests fail, they do not skip.
- Where libnvrtc is found (the library CuPy compiles with), the same modules compile with it.
- The expression translator: fixed cases, every registered scalar template, and random
  expression trees built from the templates that a C harness compiled with gcc evaluates to
  exactly the numbers Python gives (with C's fmax in place of Python's max).
- The program's structure: what becomes a GEMM, fusion, recurrences as step loops.
"""

from __future__ import annotations

import ast
import ctypes
import glob
import math
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.backends.cuda_c import TranslationError, literal, scalar_c, translate
from graphrnn.backends.cuda_source import (
    GEMM_MIN_STEP,
    Fill,
    Launch,
    MatVec,
    StepLoop,
    WeightGrad,
    build_program,
    kernel_sources,
    module_source,
)
from graphrnn.dsl import parse_file
from graphrnn.ir.registry import OPS

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(ROOT.glob("models/*.grnn"))
SMALL = {"I": 3, "H": 4, "O": 3, "L": 2}
# Sizes with large defaults (the paper's network of spatial_rnn_sex.grnn), made small.
SHRINK = {"HI": 32, "WI": 32, "C1": 2, "C2": 2, "C3": 3, "C4": 2, "H1": 3, "H2": 2}
NVCC_FLAGS = ["--ptx", "-arch=sm_80", "-Werror", "all-warnings", "-Xcicc", "-O0"]
NVCC_HELP = (
    "nvcc (the CUDA compiler) was not found on PATH, in $CUDA_HOME/bin, /usr/local/cuda*/bin "
    "or a pip-installed nvidia/cu13/bin. The CUDA source tests compile the generated kernels "
    "with it. The machine image ships it (/usr/local/cuda-13.0); elsewhere install it with "
    "`pip install nvidia-cuda-nvcc nvidia-cuda-crt nvidia-nvvm nvidia-cuda-runtime "
    "nvidia-cuda-cccl` (no GPU needed)."
)


def load_small(path: Path):
    module = parse_file(str(path))
    model = next(i for i in module.items if type(i).__name__ == "ModelDef")
    sizes = {p.name: SMALL.get(p.name, 3) for p in model.params if p.default is None}
    sizes.update({p.name: SHRINK[p.name] for p in model.params if p.name in SHRINK})
    return gr.load(path, seed=1, **sizes)


def optimised_graphs(model):
    """The graphs a backend runs: forward and (if there is a loss) the adjoint, optimised."""
    compiled = model.compile("reference", passes=True)
    graphs = {"fwd": compiled.prepared(compiled.forward_graph)}
    if model.graph.loss is not None:
        graphs["adj"] = compiled.prepared(compiled.adjoint)
    return graphs


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)]
    candidates += _pip_cuda_files("bin/nvcc")
    return next((str(c) for c in candidates if c.is_file()), None)


def _pip_cuda_files(relative: str) -> list[Path]:
    """`relative` under pip's nvidia/cu13 (CUDA 13 wheels) or nvidia/cuda_* (CUDA 12)."""
    try:
        import nvidia  # namespace package of NVIDIA's wheels
    except ImportError:
        return []
    found = []
    for base in getattr(nvidia, "__path__", []):
        found += [Path(p) for p in sorted(glob.glob(f"{base}/*/{relative}"))]
    return found


# ---- every model through nvcc ------------------------------------------------------------
def model_module(path: Path) -> str:
    """Forward and adjoint, float64 and float32, of one model in one translation unit."""
    parts = []
    for kind, graph in optimised_graphs(load_small(path)).items():
        for dtype in ("float64", "float32"):
            parts.append(f"// {path.stem} {kind} {dtype}\n")
            parts.append(module_source(graph, dtype, prefix=f"{kind}_{dtype}_"))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def nvcc_results():
    """nvcc's verdict on every model's module, compiled in parallel, keyed by model stem."""
    nvcc = find_nvcc()
    if nvcc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="graphrnn-nvcc-") as tmp:
        jobs = {}
        for path in MODELS:
            cu = Path(tmp) / f"{path.stem}.cu"
            cu.write_text(model_module(path))
            jobs[path.stem] = [nvcc, *NVCC_FLAGS, str(cu), "-o", str(cu.with_suffix(".ptx"))]

        def run(command):
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            ptx = Path(command[-1])
            entries = ptx.read_text().count(".entry") if ptx.exists() else 0
            return done.returncode, done.stdout + done.stderr, entries

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            results = dict(zip(jobs, pool.map(run, jobs.values())))
    return results


def test_there_are_models():
    assert len(MODELS) >= 10, "models/*.grnn not found"


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_kernels_compile_with_nvcc(path, nvcc_results):
    if nvcc_results is None:
        pytest.fail(NVCC_HELP)
    code, output, entries = nvcc_results[path.stem]
    assert code == 0, f"nvcc failed on {path.stem}'s kernels:\n{output}"
    graphs = optimised_graphs(load_small(path))
    expected = sum(len(kernel_sources(g, "float64")) for g in graphs.values())
    assert entries == 2 * expected, "PTX is missing kernels"


def test_nvcc_reports_errors():
    """The check has teeth: a kernel that does not compile fails with nvcc's message."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.fail(NVCC_HELP)
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / "bad.cu"
        cu.write_text('extern "C" __global__ void k(double* a) { a[0] = undefined_name; }\n')
        done = subprocess.run(
            [nvcc, *NVCC_FLAGS, str(cu), "-o", str(Path(tmp) / "bad.ptx")],
            capture_output=True,
            text=True,
        )
    assert done.returncode != 0 and "undefined_name" in done.stdout + done.stderr


# ---- NVRTC, where available --------------------------------------------------------------
def find_nvrtc():
    """libnvrtc from $GRAPHRNN_NVRTC, the system, or pip's nvidia-cuda-nvrtc; None if none."""
    candidates = [os.environ.get("GRAPHRNN_NVRTC", "")]
    candidates += [str(p) for p in _pip_cuda_files("lib/libnvrtc.so*") if ".alt." not in p.name]
    import ctypes.util

    candidates.append(ctypes.util.find_library("nvrtc") or "")
    for candidate in filter(None, candidates):
        try:
            folder = Path(candidate).parent
            for builtins in sorted(folder.glob("libnvrtc-builtins.so*")):
                if ".alt." not in builtins.name:  # nvrtc opens it by name at compile time
                    ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    return None


def nvrtc_compile(lib, source: str) -> tuple[int, str]:
    program = ctypes.c_void_p()
    assert (
        lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"m.cu", 0, None, None) == 0
    )
    options = (ctypes.c_char_p * 2)(b"--gpu-architecture=compute_80", b"-default-device")
    code = lib.nvrtcCompileProgram(program, 2, options)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, log)
    lib.nvrtcDestroyProgram(ctypes.byref(program))
    return code, log.value.decode(errors="replace")


@pytest.mark.parametrize("name", ["lstm", "gru_torch", "deep_birnn", "lstm_masked"])
def test_kernels_compile_with_nvrtc(name):
    """CuPy's RawModule compiles with NVRTC, which has no CUDA headers: the kernels must not
    need any. Needs libnvrtc (`pip install nvidia-cuda-nvrtc`), no GPU."""
    lib = find_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, or set GRAPHRNN_NVRTC)")
    for kind, graph in optimised_graphs(load_small(ROOT / "models" / f"{name}.grnn")).items():
        for dtype in ("float64", "float32"):
            code, log = nvrtc_compile(lib, module_source(graph, dtype))
            assert code == 0 and not log.strip(), f"NVRTC on {name} {kind} {dtype}:\n{log}"


# ---- the translator ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr, dtype, expected",
    [
        ("tanh(x)", "float64", "tanh(x)"),
        ("tanh(x)", "float32", "tanhf(x)"),
        ("max(x, 0.0)", "float64", "fmax(x, 0.0)"),
        ("max(x, 0.0)", "float32", "fmaxf(x, 0.0f)"),
        ("min(a, b, c)", "float64", "fmin(fmin(a, b), c)"),
        ("(1.0 if x > 0.0 else 0.0)", "float64", "(((x > 0.0)) ? (1.0) : (0.0))"),
        ("a if c else b", "float32", "((c) ? (a) : (b))"),
        ("(0.5 * tanh(0.5 * x) + 0.5)", "float32", "((0.5f * tanhf((0.5f * x))) + 0.5f)"),
        ("-x", "float64", "(-x)"),
        ("- -x", "float64", "(-(-x))"),
        ("1 / 2", "float64", "(1.0 / 2.0)"),
        ("0 < x <= 1", "float64", "((0.0 < x) && (x <= 1.0))"),
        ("not (x > 0 and y < 0)", "float64", "(!((x > 0.0) && (y < 0.0)))"),
        ("abs(x)", "float32", "fabsf(x)"),
        ("exp(log(sqrt(x)))", "float32", "expf(logf(sqrtf(x)))"),
        ("1e-05 * x", "float32", "(1e-05f * x)"),
    ],
)
def test_translate(expr, dtype, expected):
    assert translate(expr, dtype) == expected


@pytest.mark.parametrize("expr", ["x ** 2", "foo(x)", "x[0]", "x % 2", "lambda: x", "x +"])
def test_translate_rejects_what_c_cannot_say(expr):
    with pytest.raises(TranslationError):
        translate(expr)


def test_literals():
    assert literal(2) == "2.0" and literal(2, "float32") == "2.0f"
    assert literal(1e-30, "float32") == "1e-30f"
    with pytest.raises(TranslationError):
        literal(float("inf"))


def test_every_registered_template_translates():
    templates = {name: op.scalar for name, op in OPS.items() if op.elementwise}
    assert {"tanh", "sigmoid", "relu", "step", "add", "div"} <= set(templates)
    for name, template in templates.items():
        arity = OPS[name].arity
        for dtype in ("float64", "float32"):
            text = scalar_c(template, [f"x{i}" for i in range(arity)], dtype)
            assert " if " not in text and "max(" not in text.replace("fmax", ""), text


# Random expression trees built from the registered templates, evaluated by Python and by C.
ELEMENTWISE = sorted((name, op.scalar, op.arity) for name, op in OPS.items() if op.elementwise)
VARIABLES = ("x0", "x1", "x2")


def expressions(depth: int = 4):
    leaves = st.sampled_from(VARIABLES) | st.sampled_from(["0.0", "1.0", "-2.5", "0.5"])

    def extend(children):
        return st.sampled_from(ELEMENTWISE).flatmap(
            lambda op: st.lists(children, min_size=op[2], max_size=op[2]).map(
                lambda args, op=op: op[1].format(*args)
            )
        )

    return st.recursive(leaves, extend, max_leaves=2**depth)


def _c_fmax(a, b):
    """C's fmax (NaN-ignoring; glibc returns the first of two equal zeros)."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return b if b > a else a


def _c_math(fn):
    def call(x):
        x = float(x)
        if math.isnan(x):
            return np.float64(x)
        if fn is math.log and x <= 0.0:
            return np.float64(-math.inf if x == 0.0 else math.nan)
        if fn is math.sqrt and x < 0.0:
            return np.float64(math.nan)
        try:
            return np.float64(fn(x))
        except OverflowError:
            return np.float64(math.inf)

    return call


PY_ENV = {
    "tanh": _c_math(math.tanh),
    "exp": _c_math(math.exp),
    "log": _c_math(math.log),
    "sqrt": _c_math(math.sqrt),
    "max": _c_fmax,
    "F": np.float64,
}


class _Floats(ast.NodeTransformer):
    """Make every literal a numpy float64, so that Python's arithmetic is IEEE's (x / 0.0 is
    inf, not ZeroDivisionError), as in C."""

    def visit_Constant(self, node):
        call = ast.Call(ast.Name("F", ast.Load()), [node], [])
        return ast.copy_location(call, node)


def python_value(expr: str, values) -> float:
    tree = ast.fix_missing_locations(_Floats().visit(ast.parse(expr, mode="eval")))
    env = dict(PY_ENV, **{v: np.float64(x) for v, x in zip(VARIABLES, values)})
    with np.errstate(all="ignore"):
        return float(eval(compile(tree, "<expr>", "eval"), env))


def c_values(exprs: list[str], inputs: list[tuple[float, ...]], dtype="float64") -> list:
    """Each translated expression on each input, computed by a C program built with gcc."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("gcc is needed to evaluate translated expressions")
    ctype = "double" if dtype == "float64" else "float"
    lines = ["#include <math.h>", "#include <stdio.h>"]
    params = ", ".join(f"{ctype} {v}" for v in VARIABLES)
    for k, e in enumerate(exprs):
        lines.append(f"static {ctype} f{k}({params}) {{ return {translate(e, dtype)}; }}")
    lines.append("int main(void) {")
    for k in range(len(exprs)):
        for values in inputs:
            args = ", ".join(float.hex(float(x)) for x in values)
            lines.append(f'    printf("%a\\n", (double)f{k}({args}));')
    lines += ["    return 0;", "}"]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "t.c", Path(tmp) / "t"
        src.write_text("\n".join(lines) + "\n")
        built = subprocess.run(
            [gcc, "-O0", "-std=c99", "-o", str(exe), str(src), "-lm"],
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, built.stderr + "\n" + src.read_text()
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return [float("nan") if "nan" in s else float.fromhex(s) for s in out.split()]


@settings(max_examples=20, deadline=None)
@given(
    exprs=st.lists(expressions(), min_size=1, max_size=8),
    inputs=st.lists(
        st.tuples(*[st.floats(-30, 30, allow_subnormal=False)] * len(VARIABLES)),
        min_size=1,
        max_size=4,
    ),
)
def test_translated_expressions_compute_what_python_computes(exprs, inputs):
    expected = [python_value(e, values) for e in exprs for values in inputs]
    actual = c_values(exprs, inputs)
    labels = [e for e in exprs for _ in inputs]
    for e, want, got in zip(labels, expected, actual):
        # gcc may fold a constant call like tanh(-2.5) correctly rounded, where libm at run
        # time can differ in the last bit: a few ulp, never a different formula.
        same = (math.isnan(want) and math.isnan(got)) or math.isclose(
            want, got, rel_tol=1e-14, abs_tol=1e-300
        )
        assert same, f"{e} -> {translate(e)}: Python {want!r}, C {got!r}"


@settings(max_examples=5, deadline=None)
@given(exprs=st.lists(expressions(), min_size=1, max_size=8))
def test_float32_translations_use_float_functions_and_literals(exprs):
    for e in exprs:
        text = translate(e, "float32")
        assert not re.search(r"\b(tanh|exp|log|sqrt|fmax)\(", text), text
        for number in re.findall(r"\b\d[\d.e+-]*f?", text):
            assert number.endswith("f"), text
    values = c_values(exprs, [(0.25, -1.5, 2.0)], "float32")
    assert len(values) == len(exprs)


# ---- the program -------------------------------------------------------------------------
def program_of(name: str, graph="adj", dtype="float64", **sizes):
    model = gr.load(ROOT / "models" / f"{name}.grnn", seed=0, **sizes) if sizes else None
    model = model or load_small(ROOT / "models" / f"{name}.grnn")
    return build_program(optimised_graphs(model)[graph], dtype)


def test_products_with_parameters_become_gemms_like_on_the_cpu():
    """The input projection over all steps is a GEMM; the per-step recurrent product is a
    GEMM or a kernel, chosen per call by batch * rows * cols; parameter gradients are GEMMs
    over steps and batch."""
    program = program_of("elman")
    assert any(isinstance(s, MatVec) and s.small is None for s in program.steps)
    assert any(isinstance(s, WeightGrad) for s in program.steps)
    loops = [s for s in program.steps if isinstance(s, StepLoop)]
    per_step = [b for loop in loops for b in loop.body if isinstance(b, MatVec)]
    assert per_step and all(isinstance(p.small, Launch) for p in per_step)
    assert not per_step[0].uses_gemm(batch=3)
    assert per_step[0].uses_gemm(batch=-(-GEMM_MIN_STEP // (per_step[0].m * per_step[0].k)))
    assert per_step[0].small.kernel in program.kernels


def test_slices_read_in_place():
    """The gates of a merged LSTM product are slices of one buffer, read where they lie."""
    program = program_of("lstm", graph="fwd")
    assert not [k for k in program.kernels if k.endswith("_slice")], list(program.kernels)


def test_elementwise_runs_are_fused_into_one_kernel():
    program = program_of("lstm", graph="fwd")
    fused = [k for k in program.kernels if k.count("_") >= 2 and "tanh" in k]
    assert fused, list(program.kernels)
    source = program.kernels[fused[0]]
    assert source.count("const double s") >= 2  # intermediates in registers


def test_recurrences_are_step_loops_with_the_step_as_argument():
    program = program_of("birnn")
    loops = [s for s in program.steps if isinstance(s, StepLoop)]
    assert {loop.forward for loop in loops} == {True, False}
    body_kernels = {b.kernel for loop in loops for b in loop.body if isinstance(b, Launch)}
    for name in body_kernels:  # the parameter, and the fixed axis of the indices
        assert program.kernels[name].count("step") >= 2, program.kernels[name]
    assert all("const long long step" in s for s in program.kernels.values()), (
        "every kernel takes the step index"
    )


def test_launches_cover_their_buffers_and_constants_are_inlined():
    program = program_of("gru_torch")
    for launch in program.launches():
        source = program.kernels[launch.kernel]
        for node_id in launch.buffers:
            assert re.search(rf"\b{program.names[node_id]}\[", source)
    assert any(isinstance(s, Fill) for s in program.steps)


def test_kernel_sources_are_standalone_and_deterministic():
    model = load_small(ROOT / "models" / "lstm.grnn")
    graph = optimised_graphs(model)["adj"]
    first, second = kernel_sources(graph, "float32"), kernel_sources(graph, "float32")
    assert first == second
    for name, source in first.items():
        assert source.startswith(f'extern "C" __global__ void {name}(')
        assert "double" not in source
    assert module_source(graph, "float32").count("__global__") == len(first)
