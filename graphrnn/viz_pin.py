"""Step columns in step order, whatever order `dot` drew them in.

`dot` places clusters by crossing minimisation, and a picture crosses as often as its mirror
image, so the step columns of an unrolled graph (graphrnn/viz.py) may come out in any order;
flat edges, anchor nodes and `ordering=out` do not bind clusters. An image is therefore laid
out by `dot` first (as JSON), and where its columns are out of order they are moved into
order, each with the nodes that stand in the gap to its right (the parameters, mostly); then
`neato -n2` draws the picture with every node pinned there and routes the edges anew.

A column is a cluster named `cluster_<axis><k>` (`cluster_t3`); the columns of one axis are
ordered by `k`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_COLUMN = re.compile(r"^cluster_([A-Za-z]+)(\d+)$")
_NODE_LINE = re.compile(r"^(\s*)(n\d+) \[(.*)\]$", re.M)
_INVISIBLE_EDGE = re.compile(r"^\s*n\d+ -> n\d+ \[style=invis\]\n", re.M)
_MARGIN = 8.0


@dataclass
class Column:
    name: str
    step: int
    x0: float
    x1: float
    y0: float
    y1: float
    members: set[int]  # _gvid of the nodes in it


def pinned(text: str, layout: bytes | str) -> str | None:
    """DOT text for `neato -n2` with the columns in step order, from `dot`'s JSON `layout`
    of `text`; None where `dot` already has them in order."""
    laid = json.loads(layout)
    columns = _columns(laid)
    if [c.step for c in sorted(columns, key=lambda c: c.x0)] == sorted(c.step for c in columns):
        return None
    owner = {i: c for c in columns for i in c.members}
    placed = []  # (name, x, y, the column it moves with, its right edge)
    for node in laid["objects"]:
        if "pos" in node and "nodes" not in node:
            x, y = (float(v) for v in node["pos"].split(","))
            half = 36.0 * float(node.get("width", 0))  # width in inches, 72 points each
            home = owner.get(node["_gvid"]) or _left_neighbour(x - half, x + half, columns)
            placed.append((node["name"], x, y, home, x + half))
    reach: dict[str, float] = {}
    for _, _, _, home, right in placed:
        if home is not None:
            reach[home.name] = max(reach.get(home.name, home.x1), right)
    shift = _shifts(columns, reach)
    positions = {
        name: (x + (shift[home.name] if home else 0.0), y) for name, x, y, home, _ in placed
    }
    return _with_positions(text, positions, columns, shift, laid)


def _columns(laid: dict) -> list[Column]:
    """The step columns of the one axis that has them (none if several axes do)."""
    found = []
    for o in laid.get("objects", []):
        match = _COLUMN.match(o.get("name", ""))
        if match and "bb" in o:
            x0, y0, x1, y1 = (float(v) for v in o["bb"].split(","))
            found.append((match[1], Column(o["name"], int(match[2]), x0, x1, y0, y1, set())))
            found[-1][1].members.update(o.get("nodes", []))
    axes = {axis for axis, _ in found}
    return [c for _, c in found] if len(axes) == 1 else []


def _shifts(columns: list[Column], reach: dict[str, float]) -> dict[str, float]:
    """How far each column moves: laid out again in step order from the same left edge, each
    followed by the gap that followed it, wide enough for the nodes that move with it (right
    edges up to `reach`)."""
    drawn = sorted(columns, key=lambda c: c.x0)
    gap = {a.name: b.x0 - a.x1 for a, b in zip(drawn, drawn[1:])}
    x, shift = drawn[0].x0, {}
    for column in sorted(columns, key=lambda c: c.step):
        shift[column.name] = x - column.x0
        needed = reach.get(column.name, column.x1) - column.x1 + _MARGIN
        x += column.x1 - column.x0 + max(gap.get(column.name, _MARGIN), needed)
    return shift


def _left_neighbour(left: float, right: float, columns: list[Column]) -> Column | None:
    """The column a node outside every column (spanning `left` to `right`) moves with: the
    one it stands above or below, else the nearest one left of its centre."""
    over = [c for c in columns if c.x0 <= left and right <= c.x1]
    before = [c for c in columns if c.x1 <= (left + right) / 2]
    return over[0] if over else max(before, key=lambda c: c.x1) if before else None


def _with_positions(
    text: str,
    positions: dict[str, tuple[float, float]],
    columns: list[Column],
    shift: dict[str, float],
    laid: dict,
) -> str:
    def pin(match: re.Match) -> str:
        indent, name, attrs = match.groups()
        if name not in positions:
            return match[0]
        x, y = positions[name]
        return f'{indent}{name} [{attrs} pos="{x:.2f},{y:.2f}!"]'

    text = _INVISIBLE_EDGE.sub("", _NODE_LINE.sub(pin, text))
    for c in columns:
        dx = shift[c.name]
        box = f'graph [bb="{c.x0 + dx:.2f},{c.y0:.2f},{c.x1 + dx:.2f},{c.y1:.2f}"]'
        text = text.replace(f"subgraph {c.name} {{", f"subgraph {c.name} {{\n\t\t{box}", 1)
    x0, y0, x1, y1 = (float(v) for v in laid["bb"].split(","))
    right = max([x1, *(c.x1 + shift[c.name] + _MARGIN for c in columns)])
    header = f'\tgraph [bb="{x0:.2f},{y0:.2f},{right:.2f},{y1:.2f}" splines=true]'
    first, rest = text.split("\n", 1)
    return f"{first}\n{header}\n{rest}"
