"""Mutated model files driven through the whole pipeline: the robustness probe of issue 12.

`mutate(text, rng)` makes one small edit a hurried user could make (swap two tokens, delete
one, change a lag or a number, rename a name, drop or repeat a line). `drive(text, path,
backend)` then parses, lowers, compiles and runs the result on random data (forward and
loss_and_grad) and classifies what happened:

- "ran": the model ran (its numbers may be NaN: `log(-1)` is a valid model);
- "error": a GraphRNNError that names its place (file:line:column in the model text);
- "capped": the model is valid but its data would exceed MEMORY_CAP (a mutated size);
- "unlocated": a GraphRNNError without a place: a defect;
- "raw": any other exception, a traceback from inside: a defect.

Sizes a file leaves open get 3, 4, 5, ... (as `graphrnn check` gives them), or small image
sizes; memory is capped at MEMORY_CAP for the run, so a mutated size of 10**8 is refused
with the figure instead of being allocated.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrnn import memory
from graphrnn.dsl import ast, parse
from graphrnn.errors import GraphRNNError
from graphrnn.model import Model, loads

MEMORY_CAP = 256 * 2**20
SMALL_SIZES = {"HI": 32, "WI": 32, "C1": 2, "C2": 2, "C3": 2, "C4": 2, "H1": 2, "H2": 2}
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\.|[^\sA-Za-z0-9_]")
_LOCATED = re.compile(r":\d+:\d+")
_NUMBERS = ["0", "1", "2", "9", "100000000", "-1", "0.5", "1e308", "1e-300", "007"]
_NAMES = ["t", "end", "x", "h", "loss", "tanh", "zeros", "over", "sum", "dim", "q", "model"]


@dataclass
class Outcome:
    kind: str  # ran | error | capped | unlocated | raw
    detail: str = ""  # the error's first line, or the traceback's last lines

    @property
    def defect(self) -> bool:
        return self.kind in ("unlocated", "raw")


def _tokens(text: str) -> list[re.Match]:
    """The tokens of the model text outside comments, with their spans."""
    found = []
    for line in re.finditer(r"[^\n]*", text):
        code = line.group().split("#", 1)[0]
        for m in _TOKEN.finditer(code):
            found.append((line.start() + m.start(), line.start() + m.end(), m.group()))
    return found


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _swap(text, toks, rng):
    k = int(rng.integers(len(toks) - 1))
    (s1, e1, a), (s2, e2, b) = toks[k], toks[k + 1]
    return text[:s1] + b + text[e1:s2] + a + text[e2:]


def _delete(text, toks, rng):
    s, e, _ = toks[int(rng.integers(len(toks)))]
    return _splice(text, s, e, "")


def _lag(text, toks, rng):
    lags = list(re.finditer(r"\b([a-z])\s*([+-])\s*(\d+)\b", text))
    if not lags:
        return _number(text, toks, rng)
    m = lags[int(rng.integers(len(lags)))]
    new = f"{m.group(1)}{rng.choice(['+', '-'])}{rng.choice(['0', '1', '2', '5', '100000000'])}"
    return _splice(text, m.start(), m.end(), new)


def _number(text, toks, rng):
    numbers = [t for t in toks if t[2][0].isdigit()]
    if not numbers:
        return _rename(text, toks, rng)
    s, e, _ = numbers[int(rng.integers(len(numbers)))]
    return _splice(text, s, e, str(rng.choice(_NUMBERS)))


def _rename(text, toks, rng):
    names = [t for t in toks if t[2][0].isalpha() or t[2][0] == "_"]
    s, e, _ = names[int(rng.integers(len(names)))]
    pool = _NAMES + [t[2] for t in names]
    return _splice(text, s, e, str(pool[int(rng.integers(len(pool)))]))


def _line(text, toks, rng):
    lines = text.split("\n")
    k = int(rng.integers(len(lines)))
    if rng.random() < 0.5:
        del lines[k]
    else:
        lines.insert(k, lines[int(rng.integers(len(lines)))])
    return "\n".join(lines)


MUTATIONS: dict[str, Callable] = {
    "swap": _swap,
    "delete": _delete,
    "lag": _lag,
    "number": _number,
    "rename": _rename,
    "line": _line,
}


def mutate(text: str, rng: np.random.Generator) -> tuple[str, str]:
    """One edit of `text`: (the mutation's name, the new text)."""
    name = str(rng.choice(list(MUTATIONS)))
    toks = _tokens(text)
    return name, MUTATIONS[name](text, toks, rng) if len(toks) > 1 else text


def _sizes(text: str, path: str) -> dict[str, int]:
    """Sizes for the first model of `text`: small image sizes by name, else 3, 4, 5, ..."""
    models = [i for i in parse(text, path).items if isinstance(i, ast.ModelDef)]
    if not models:
        return {}
    sizes, k = {}, 3
    for p in models[0].params:
        if p.name in SMALL_SIZES:
            sizes[p.name] = SMALL_SIZES[p.name]
        elif p.default is None:
            sizes[p.name], k = k, k + 1
    return sizes


def _data(model: Model, tau: int, batch: int, seed: int):
    from graphrnn.check import random_data

    graph = model.graph
    count = 0
    for node in {**graph.inputs, **graph.targets}.values():
        lead = [tau for a in graph.axes if a in node.axes]
        count += memory.elements(lead + [batch, *node.shape])
    if count * 8 > MEMORY_CAP:
        raise _Capped(f"its data would take {memory.format_bytes(count * 8)}")
    return random_data(model, tau, batch, seed)


class _Capped(Exception):
    """The probe's own limit, not graphrnn's: data too large to make for one case."""


def run_model(text: str, path: str, backend: str, tau: int, seed: int = 0) -> dict:
    """Parse, lower, compile and run `text` once; returns the forward outputs and loss."""
    model = loads(text, path=path, seed=seed, **_sizes(text, path))
    fn = model.compile(backend, dtype="float64")
    inputs, targets = _data(model, tau, 2, seed)
    result = {"outputs": fn.forward(model.params, inputs)}
    if model.graph.loss is not None:
        result["loss"], result["grads"] = fn.loss_and_grad(model.params, inputs, targets)
    return result


def drive(text: str, path: str, backend: str = "reference", tau: int = 4) -> Outcome:
    """Run `text` and classify what happened (see the module docstring)."""
    cap, memory.available_bytes = memory.available_bytes, lambda: MEMORY_CAP
    try:
        with np.errstate(all="ignore"):
            run_model(text, path, backend, tau)
        return Outcome("ran")
    except _Capped as e:
        return Outcome("capped", str(e))
    except GraphRNNError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        located = getattr(e, "loc", None) is not None or _LOCATED.search(str(e))
        return Outcome("error" if located else "unlocated", f"{type(e).__name__}: {first}")
    except RecursionError:
        return Outcome("raw", "RecursionError")
    except Exception as e:  # the defects this probe looks for
        tail = "".join(traceback.format_exception(e)[-3:]).strip()
        return Outcome("raw", f"{type(e).__name__}: {e}\n{tail}")
    finally:
        memory.available_bytes = cap


def shipped_models(root: Path) -> dict[str, str]:
    """The model zoo: file name -> text."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((root / "models").glob("*.grnn"))}
