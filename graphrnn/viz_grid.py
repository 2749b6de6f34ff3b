"""Rows of the unrolled picture: one band of rows per recurrence, the copies of an equation
side by side.

graphrnn/viz.py draws each step of a graph unrolled over one axis as a column (a cluster),
and the initial values in columns of their own, `t = 0` left of the first step and
`t = T+1` right of the last (for a backward recurrence). The constraints here are added to
its DOT text (`newrank=true` lets a rank span clusters):

- **rows**: the copies of one equation (`h@1`, `h@2`, ...) share a rank, and an initial value
  the rank of its first reader, so every row runs straight across the steps;
- **bands**: a recurrence (the equations of one layer or one direction: the cycles that the
  edges between steps close) gets rows of its own, below the recurrence it comes after, by
  invisible edges from that one's last equations to its first ones in every step; a
  bidirectional layer thus draws its forward row above its backward row.

Which column comes first is not dot's to keep (graphrnn/viz_pin.py puts them in order).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from graphrnn.ir.node import Node

# The step index (1-based) of every per-step node of a graph unrolled over one axis.
Columns = dict[int, int]


@dataclass
class Grid:
    """Invisible constraints for `dot`: ranks to share, and edges that stack nodes."""

    same_rank: list[list[Node]] = field(default_factory=list)
    stack: list[tuple[Node, Node]] = field(default_factory=list)  # above, below


def grid(
    nodes: list[Node],
    links: list[tuple[Node, Node]],
    column: Columns,
    base: dict[int, str],
    initial: set[int],
) -> Grid:
    """The constraints that draw `nodes` in rows.

    `links` are the drawn edges (source, target); `column` gives the step of each per-step
    node and `base` the equation's name of the named ones (`h` for `h@2`); `initial` holds
    the initial values.
    """
    result = Grid()
    result.same_rank.extend(_copies(nodes, column, base).values())
    result.stack = _stacked_recurrences(nodes, links, column, base)
    for node in nodes:
        readers = [t for s, t in links if s is node and t.id in column]
        if node.id in initial and readers:
            result.same_rank.append([node, readers[0]])
    return result


def _copies(nodes: list[Node], column: Columns, base: dict[int, str]) -> dict[str, list[Node]]:
    """The copies of each equation drawn in more than one step, by step."""
    by_base: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        if node.id in base:
            by_base[base[node.id]].append(node)
    return {
        name: sorted(row, key=lambda n: column[n.id])
        for name, row in by_base.items()
        if len({column[n.id] for n in row}) == len(row) > 1
    }


# ---- recurrences -------------------------------------------------------------------------


def _stacked_recurrences(
    nodes: list[Node], links: list[tuple[Node, Node]], column: Columns, base: dict[int, str]
) -> list[tuple[Node, Node]]:
    """Invisible edges that put each recurrence below the one before it, step by step."""
    names = list(dict.fromkeys(base[n.id] for n in nodes if n.id in base))
    succ: dict[str, set[str]] = {name: set() for name in names}
    for s, t in links:
        if s.id in base and t.id in base:
            succ[base[s.id]].add(base[t.id])
    recurrences = [c for c in _components(names, succ) if len(c) > 1 or c[0] in succ[c[0]]]
    by_step = {(base[n.id], column[n.id]): n for n in nodes if n.id in base}
    steps = sorted(set(column.values()))
    result = []
    for upper, lower in zip(recurrences, recurrences[1:]):
        for k in steps:
            above = _ends(upper, k, by_step, links, last=True)
            below = _ends(lower, k, by_step, links, last=False)
            result.extend((a, b) for a in above for b in below)
    return result


def _ends(
    members: list[str],
    k: int,
    by_step: dict[tuple[str, int], Node],
    links: list[tuple[Node, Node]],
    last: bool,
) -> list[Node]:
    """A recurrence's last (or first) equations at step k: read by (reading) no other."""
    here = [by_step[(m, k)] for m in members if (m, k) in by_step]
    ids = {n.id for n in here}
    inner = [(s, t) for s, t in links if s.id in ids and t.id in ids and s is not t]
    blocked = {s.id for s, _ in inner} if last else {t.id for _, t in inner}
    return [n for n in here if n.id not in blocked]


def _components(names: list[str], succ: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components in topological order (ties in the order of `names`)."""
    reach = {name: _reachable(name, succ) for name in names}
    component = {
        name: tuple(m for m in names if m in reach[name] and name in reach[m] or m == name)
        for name in names
    }
    groups = list(dict.fromkeys(component[n] for n in names))
    downstream = {g: {component[m] for n in g for m in reach[n]} - {g} for g in groups}
    ordered: list[tuple[str, ...]] = []
    while len(ordered) < len(groups):
        waiting = [g for g in groups if g not in ordered]
        ready = next(g for g in waiting if not any(g in downstream[h] for h in waiting))
        ordered.append(ready)
    return [list(g) for g in ordered]


def _reachable(name: str, succ: dict[str, set[str]]) -> set[str]:
    seen, stack = set(), [name]
    while stack:
        for nxt in succ[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen
