"""Formulas in C: the formula language of graphrnn/loopnest.py translated to CUDA C.

`a if c else b` becomes `((c) ? (a) : (b))`, `max` `fmax` (or a conditional on indices), and in
float32 `tanh` `tanhf` etc. with `f`-suffixed literals. Every subexpression is parenthesised, so
C's precedence never matters. An expression is translated in one of two contexts:

- "value": Python's true division holds, so integer literals become floating literals and the
  run-time sizes B and S_<axis> are cast to the float type;
- "index": integers stay integers, `//` and `%` are C's `/` and `%` (the kernels use them only
  on non-negative operands, where the two languages agree).
"""

from __future__ import annotations

import ast
import functools
import math
import re

from graphrnn.loopnest import parse

CTYPES = {"float64": "double", "float32": "float"}
_MATH = ("tanh", "exp", "log", "sqrt")
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_INDEX_BINARY = {ast.FloorDiv: "/", ast.Mod: "%"}
_COMPARE = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
_SIZE = re.compile(r"S_\w+|B")
_PLACEHOLDER = re.compile(r"\b_arg(\d+)\b")


class TranslationError(ValueError):
    """A formula uses Python that has no CUDA C counterpart here."""


def literal(value: float, dtype: str = "float64") -> str:
    """A floating-point C literal of `dtype` (Python's `/` is true division, so integers in a
    formula become floating literals too)."""
    value = float(value)
    if not math.isfinite(value):
        raise TranslationError(f"the constant {value} has no C literal")
    text = repr(value)
    if "e" not in text and "." not in text:
        text += ".0"
    return text + ("f" if dtype == "float32" else "")


def translate(
    expr: str, dtype: str = "float64", kind: str = "value", names: dict[str, str] | None = None
) -> str:
    """The C expression of a formula; `names` maps names of the formula to C text."""
    try:
        tree = parse(expr)
    except SyntaxError as e:
        raise TranslationError(f"cannot parse the formula {expr!r}: {e.msg}") from None
    return _Translator(dtype, kind, names or {}, expr).c(tree)


class _Translator:
    def __init__(self, dtype: str, kind: str, names: dict[str, str], whole: str):
        self.dtype, self.index, self.names, self.whole = dtype, kind == "index", names, whole
        self.suffix = "f" if dtype == "float32" else ""

    def c(self, node: ast.AST) -> str:
        sub = self.c
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op)) or (self.index and _INDEX_BINARY.get(type(node.op)))
            if op:
                return f"({sub(node.left)} {op} {sub(node.right)})"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return f"(-{sub(node.operand)})"
            if isinstance(node.op, ast.UAdd):
                return sub(node.operand)
            if isinstance(node.op, ast.Not):
                return f"(!{sub(node.operand)})"
        if isinstance(node, ast.IfExp):
            return f"(({sub(node.test)}) ? ({sub(node.body)}) : ({sub(node.orelse)}))"
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            operands = [node.left, *node.comparators]
            parts = [
                f"({sub(a)} {_COMPARE[type(op)]} {sub(b)})"
                for a, op, b in zip(operands, node.ops, operands[1:])
            ]
            return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"
        if isinstance(node, ast.BoolOp):
            joiner = " && " if isinstance(node.op, ast.And) else " || "
            return "(" + joiner.join(sub(v) for v in node.values) + ")"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            call = self._call(node.func.id, [sub(a) for a in node.args])
            if call is not None:
                return call
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            if self.index and type(node.value) is int:
                return str(node.value)
            return literal(node.value, self.dtype)
        raise TranslationError(
            f"cannot translate {ast.unparse(node)!r} in {self.whole!r} to CUDA C"
        )

    def _call(self, name: str, args: list[str]) -> str | None:
        if name in _MATH and len(args) == 1:
            return f"{name}{self.suffix}({args[0]})"
        if name == "abs" and len(args) == 1:
            return f"fabs{self.suffix}({args[0]})"
        if name in ("max", "min") and len(args) >= 2:
            result = args[0]
            for a in args[1:]:
                if self.index:
                    cmp = ">" if name == "max" else "<"
                    result = f"(({result}) {cmp} ({a}) ? ({result}) : ({a}))"
                else:
                    result = f"f{name}{self.suffix}({result}, {a})"
            return result
        return None

    def _name(self, name: str) -> str:
        if name in self.names:
            return self.names[name]
        if not self.index and _SIZE.fullmatch(name):
            return f"(({CTYPES[self.dtype]}){name})"
        return name


@functools.cache
def _template(template: str, arity: int, dtype: str) -> str:
    return translate(template.format(*(f"_arg{i}" for i in range(arity))), dtype)


def scalar_c(template: str, operands: list[str], dtype: str) -> str:
    """An op's `scalar` template applied to C operand expressions."""
    text = _template(template, len(operands), dtype)
    return _PLACEHOLDER.sub(lambda m: operands[int(m.group(1))], text)
