"""The model zoo (models/*.grnn): every file loads with small sizes and passes the gradient
check; the zoo's conventions (header comment, shared definitions kept identical, a doc page)
hold. A new model file is picked up automatically."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.check import gradient_check, random_data
from graphrnn.dsl import parse_file
from graphrnn.dsl.ast import ModelDef

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.grnn"))
DOCS = ROOT / "docs" / "models"

# Small sizes for the usual size names; a size not listed keeps its default (L = 2) or gets 2.
SMALL = {"I": 3, "H": 3, "O": 2}
# spatial_rnn_sex: a 32x64 image (non-square), two channels and two units everywhere
SMALL.update({"HI": 32, "WI": 64, "C1": 2, "C2": 2, "C3": 2, "C4": 2, "H1": 2, "H2": 2})


def small_sizes(path: Path) -> dict[str, int]:
    module = parse_file(str(path))
    model = next(item for item in module.items if isinstance(item, ModelDef))
    sizes = {}
    for p in model.params:
        if p.name in SMALL:
            sizes[p.name] = SMALL[p.name]
        elif p.default is None:
            sizes[p.name] = 2
    return sizes


def load_small(path: Path) -> gr.Model:
    return gr.load(path, **small_sizes(path))


def test_zoo_is_there():
    names = {p.stem for p in MODELS}
    expected = {
        "elman",
        "jordan",
        "lstm",
        "lstm_peephole",
        "gru_cho",
        "gru_torch",
        "elman_relu",
        "dt_rnn",
        "do_rnn",
        "stacked_rnn",
        "birnn",
        "deep_birnn",
        "many_to_one",
        "lstm_classifier",
        "lstm_regressor",
        "gru_classifier",
        "gru_regressor",
    }
    assert expected <= names


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_gradient_check(path):
    model = load_small(path)
    # eps = 1e-5 rather than the default 1e-6: the LSTMs' smallest gradients (|g| ~ 1e-4 at
    # initialisation, e.g. the peepholes) carry a round-off error of a few 1e-7 relative at
    # eps = 1e-6, too close to the bound; at 1e-5 the worst model is below 1e-7.
    results = gradient_check(model, tau=4, batch=2, eps=1e-5)
    assert {r.name for r in results} == set(model.params)
    worst = max(results, key=lambda r: r.rel_error)
    assert worst.rel_error < 1e-6, f"{path.name}: {worst.name} rel_error={worst.rel_error:.3e}"
    # The check must not pass vacuously: the loss depends on the parameters.
    assert sum(r.grad_norm for r in results) > 0


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_forward_is_finite(path):
    model = load_small(path)
    fn = model.compile(backend="reference", dtype="float64")
    inputs, _ = random_data(model, tau=5, batch=2, seed=0)
    out = fn.forward(model.params, inputs)
    assert out
    for name, value in out.items():
        assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_header_comment(path):
    """Each file starts with a comment stating its equations."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path.name} has no header comment"


def _definitions(text: str) -> dict[str, str]:
    """`def NAME(...)` blocks of a model file, as text (the def line and its indented body)."""
    blocks: dict[str, str] = {}
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = re.match(r"def (\w+)\(", line)
        if not m:
            continue
        body = [line]
        for nxt in lines[k + 1 :]:
            if nxt and not nxt[0].isspace():
                break
            body.append(nxt)
        blocks[m.group(1)] = "\n".join(body).rstrip()
    return blocks


def test_shared_definitions_are_identical():
    """There is no import between model files: a def repeated in several files stays the same."""
    seen: dict[str, tuple[str, str]] = {}
    for path in MODELS:
        for name, text in _definitions(path.read_text()).items():
            if name in seen:
                first, expected = seen[name]
                assert text == expected, f"def {name} differs between {first} and {path.name}"
            else:
                seen[name] = (path.name, text)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_doc_page(path):
    page = DOCS / f"{path.stem}.md"
    assert page.exists(), f"no documentation page {page.relative_to(ROOT)}"
    text = page.read_text()
    assert f"graphrnn check models/{path.name}" in text
    assert f"graphrnn render models/{path.name}" in text
