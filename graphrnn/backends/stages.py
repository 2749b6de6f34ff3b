"""Cutting a generated loop program into stage functions that Numba compiles one by one.

Numba's compile time grows faster than the size of a function, so one function per graph made
a large network (the SpatialRNN classifier's adjoint) take tens of minutes. LoopGen marks the
points between top-level nests where the program may be cut; consecutive pieces are packed into
stages of about `budget` lines. A stage is a function of the buffers it reads that returns the
buffers later stages read. A recurrence is never cut, so no Python runs between its steps; the
driver that calls the stages in order is plain Python.

Names inside a stage are renumbered by first appearance, so the same code in two graphs (the
forward recurrence of the forward graph and of the loss_and_grad graph) is one stage source
and compiles once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

BUFFER = re.compile(r"\bv\d+\b")
SIZE = re.compile(r"\b(?:S_\w+|B)\b")
# Locals are printed as <name>_<node number> (numba_program._NestNames).
LOCAL = re.compile(r"\b[a-z][a-z0-9_]*?_\d+\b")
DEFINITION = re.compile(r"^\s*(v\d+) = ")
DEFAULT_BUDGET = 150


@dataclass(frozen=True)
class Stage:
    """One compiled function: its canonical source (a `def stage(...)` at column 0), the
    driver's names it is called with, and the driver's names its results are bound to."""

    source: str
    args: list[str]
    returns: list[str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:20]


def pack(lines: list[str], cuts: list[int], budget: int = DEFAULT_BUDGET) -> list[list[str]]:
    """Consecutive pieces between cut points, joined until a stage holds `budget` lines."""
    chunks: list[list[str]] = []
    current: list[str] = []
    bounds = sorted({c for c in cuts if 0 < c < len(lines)}) + [len(lines)]
    start = 0
    for end in bounds:
        piece = lines[start:end]
        start = end
        if current and len(current) + len(piece) > budget:
            chunks.append(current)
            current = []
        current = current + piece
    if current:
        chunks.append(current)
    return chunks


def split(chunks: list[list[str]], results: list[str]) -> list[Stage]:
    """A Stage per chunk: arguments are the buffers and sizes it reads but does not create;
    it returns those it creates that a later chunk or the program's `results` read."""
    read_later: list[set[str]] = []
    later = set(results)
    for chunk in reversed(chunks):
        read_later.append(set(later))
        later |= _names(chunk)
    read_later.reverse()
    return [_stage(chunk, needed) for chunk, needed in zip(chunks, read_later)]


def _names(lines: list[str]) -> set[str]:
    return {m for line in lines for m in BUFFER.findall(line)}


def _stage(lines: list[str], needed: set[str]) -> Stage:
    order: list[str] = []
    created: set[str] = set()
    for line in lines:
        defined = DEFINITION.match(line)
        for name in BUFFER.findall(line):
            if name not in order:
                order.append(name)
                if defined and defined.group(1) == name:
                    created.add(name)
    args = [n for n in order if n not in created]
    sizes = sorted({m for line in lines for m in SIZE.findall(line)})
    returns = [n for n in order if n in created and n in needed]
    canonical = {name: f"v{k}" for k, name in enumerate(order)}
    body = _renumber(lines, canonical)
    params = ", ".join([canonical[a] for a in args] + sizes)
    text = [f"def stage({params}):", *body]
    if returns:
        text.append(f"    return ({''.join(canonical[r] + ', ' for r in returns)})")
    return Stage("\n".join(text) + "\n", args + sizes, returns)


def _renumber(lines: list[str], canonical: dict[str, str]) -> list[str]:
    local: dict[str, str] = {}
    counts: dict[str, int] = {}

    def rename_local(m: re.Match) -> str:
        name = m.group(0)
        if name not in local:
            stem = name.rsplit("_", 1)[0] + "_"
            local[name] = f"{stem}{counts.get(stem, 0)}"
            counts[stem] = counts.get(stem, 0) + 1
        return local[name]

    out = []
    for line in lines:
        line = BUFFER.sub(lambda m: canonical[m.group(0)], line)
        out.append(LOCAL.sub(rename_local, line))
    return out
