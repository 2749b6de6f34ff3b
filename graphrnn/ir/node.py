"""Nodes of the folded graph.

A node is an op applied to input nodes. Besides its per-example `shape` it carries its
*context*: the index axes it varies over (`axes`, e.g. {"t"} or {"i", "j"}) and whether it
varies over the batch (`batched`). Values are stored aligned: one leading dimension per axis
of the graph (size 1 where the node does not vary), then one for the batch (size 1 when not
batched), then the per-example shape. Broadcasting between contexts is then numpy's own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from graphrnn.errors import Loc

_ids = itertools.count()


@dataclass(frozen=True)
class Context:
    axes: frozenset[str]
    batched: bool

    def __le__(self, other: Context) -> bool:
        return self.axes <= other.axes and (other.batched or not self.batched)

    def union(self, other: Context) -> Context:
        return Context(self.axes | other.axes, self.batched or other.batched)

    def __str__(self) -> str:
        parts = sorted(self.axes) + (["batch"] if self.batched else [])
        return "(" + ", ".join(parts) + ")"


STATIC = Context(frozenset(), False)


class Node:
    """One value of the graph. Identity matters: two nodes are equal only if they are the same."""

    __slots__ = ("id", "op", "inputs", "attrs", "shape", "context", "name", "loc")

    def __init__(
        self,
        op: str,
        inputs: list[Node],
        attrs: dict[str, Any],
        shape: tuple[int, ...] | None,
        context: Context,
        name: str | None = None,
        loc: Loc | None = None,
    ):
        self.id = next(_ids)
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.shape = shape
        self.context = context
        self.name = name
        self.loc = loc

    @property
    def axes(self) -> frozenset[str]:
        return self.context.axes

    @property
    def batched(self) -> bool:
        return self.context.batched

    def label(self) -> str:
        """The user's name when there is one, else the op: what errors and pictures show."""
        return self.name or self.op

    def __repr__(self) -> str:
        args = ", ".join(f"%{i.id}" for i in self.inputs)
        attrs = "".join(f", {k}={v!r}" for k, v in self.attrs.items())
        named = f" '{self.name}'" if self.name else ""
        return f"%{self.id}{named} = {self.op}({args}{attrs}) : {self.shape} {self.context}"
