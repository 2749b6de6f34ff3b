"""Lowering: the parsed model file to the folded graph (IR), with sizes bound.

Semantics in brief (docs/language.md has the full story):
- declarations (input, target, param) are hoisted; `for` loops are expanded;
- equations `h(t) = ...` are lowered lazily, on first use, so they may refer to each other in
  any order, like mathematics; reading `h(t-1)` makes a delay node whose boundary value is
  the equation `h(0) = ...`; reading `h(t)` of an equation that is still being lowered is a
  cycle without delay;
- plain assignments `a = ...` are lowered in order (Python-like) and may rebind a name;
- a definition call lowers the definition's body in a fresh scope whose parameters are named
  after the binding (`enc = lstm(x, 8)` owns `enc.Wf`), and whose `over` argument binds the
  axis it recurs along; the argument's other axes act like the batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from graphrnn.dsl import ast, expressions
from graphrnn.dsl.builtins import Builtin, is_builtin
from graphrnn.dsl.scope import Axis, Frame, Scope, as_node, describe, integer, positive, where
from graphrnn.errors import CausalityError, DSLError, GraphRNNError, Loc, ShapeError
from graphrnn.initializers import INITIALIZERS, bind_arguments
from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import Context, Node
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply

MODES = ("train", "eval")
MAX_LOOP = 10_000  # iterations of one `for` loop, each a copy of its body in the graph


def lower_model(
    module: ast.Module, sizes: Mapping[str, int], model: str | None = None, mode: str = "train"
) -> Graph:
    """Lower the model named `model` (default: the first in the file) with the given sizes.

    `mode` only changes batch norms: "train" normalises with the batch statistics, "eval"
    with the running statistics, leaves named after each batch norm (docs/grid_ops.md)."""
    if mode not in MODES:
        raise GraphRNNError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    lowerer = Lowerer(module, mode)
    try:
        return lowerer.lower(sizes, model)
    except RecursionError:
        raise DSLError(
            "the model nests too deeply to lower (expressions or definition calls); "
            "split it into named values",
            lowerer.current.loc if lowerer.current is not None else None,
        ) from None


class Lowerer:
    def __init__(self, module: ast.Module, mode: str = "train"):
        self.module = module
        self.mode = mode
        _check_unique_names(module)
        self.defs = {i.name: i for i in module.items if isinstance(i, ast.FuncDef)}
        self.models = [i for i in module.items if isinstance(i, ast.ModelDef)]
        self.calls: list[ast.FuncDef] = []  # definitions being expanded, outermost first
        self.current: ast.ModelDef | ast.FuncDef | None = None
        self.graph: Graph | None = None
        self.used_prefixes: set[str] = set()
        self.new_axes: set[str] = set()  # axes made by patches(), of static length

    # ---- the model -------------------------------------------------------------------
    def lower(self, sizes: Mapping[str, int], model: str | None) -> Graph:
        if not self.models:
            source = self.module.source
            raise DSLError(
                "no `model` in this file",
                Loc(source, 1, 1, 1, 1),
                "a model file defines at least one `model NAME(SIZES):` block",
            )
        chosen = self._choose(model)
        self.current = chosen
        self.graph = Graph(chosen.name, ())
        scope = Scope(self, "")
        scope.values.update(self._bind_sizes(chosen, sizes))
        self._lower_body(scope, chosen.body, {})
        for name, node in scope.lowered.items():
            self.graph.outputs.setdefault(name, node)
        for name, value in scope.values.items():
            if isinstance(value, Node) and value.op not in ("input", "param") and name != "loss":
                self.graph.outputs.setdefault(name, value)
        loss = scope.values.get("loss")
        if isinstance(loss, Node):
            self._check_loss(loss)
            self.graph.loss = loss
        elif loss is not None:
            raise DSLError(
                f"the loss must be a value of the network, got {describe(loss)}", chosen.loc
            )
        self.graph.loc = chosen.loc
        graph = resolve_aliases(self.graph)
        self._check_equation_shapes(graph)
        return graph

    def _choose(self, model: str | None) -> ast.ModelDef:
        if model is None:
            return self.models[0]
        for m in self.models:
            if m.name == model:
                return m
        names = ", ".join(m.name for m in self.models)
        raise GraphRNNError(f"no model '{model}' in {self.module.source.path}; it has {names}")

    def _bind_sizes(self, model: ast.ModelDef, sizes: Mapping[str, int]) -> dict[str, int]:
        declared = {p.name for p in model.params}
        unknown = sorted(set(sizes) - declared)
        if unknown:
            raise DSLError(
                f"model {model.name} has no size {', '.join(unknown)}; "
                f"its sizes are {', '.join(p.name for p in model.params) or 'none'}",
                model.loc,
            )
        bound: dict[str, int] = {}
        for p in model.params:
            if p.name in sizes:
                bound[p.name] = positive(sizes[p.name], p.name, p.loc)
            elif p.default is not None:
                value = self.eval(p.default, Frame(Scope(self, ""), dict(bound)))
                bound[p.name] = positive(value, p.name, p.loc)
            else:
                raise DSLError(
                    f"model {model.name} needs the size {p.name}: give it, e.g. "
                    f"`--dim {p.name}=16` or gr.load(path, {p.name}=16)",
                    p.loc,
                )
        return bound

    def _check_loss(self, loss: Node) -> None:
        if loss.axes:
            axes = ", ".join(sorted(loss.axes))
            raise DSLError(
                f"the loss varies over {axes}; reduce it, e.g. `loss = mean over {axes} of ...`",
                loss.loc,
            )
        if loss.shape != ():
            raise ShapeError(
                f"the loss must be one number per example, got shape {list(loss.shape)}",
                loss.loc,
                "sum or average it, e.g. with sum(...) or mean(...)",
            )

    def _check_equation_shapes(self, graph: Graph) -> None:
        for node in graph.nodes():
            if node.op == "delay":
                value, init = node.inputs
                if value.shape != init.shape:
                    raise ShapeError(
                        f"'{value.name}' has shape {list(value.shape)} but its initial value "
                        f"has shape {list(init.shape)}",
                        value.loc,
                        f"initial value defined at {init.loc}" if init.loc else None,
                    )

    # ---- bodies ----------------------------------------------------------------------
    def _flatten(self, scope: Scope, body, bindings: dict) -> list[tuple[object, dict]]:
        flat = []
        for stmt in body:
            if isinstance(stmt, ast.For):
                frame = Frame(scope, bindings)
                start = integer(self.eval(stmt.start, frame), "loop start", stmt.start.loc)
                stop = integer(self.eval(stmt.stop, frame), "loop end", stmt.stop.loc)
                if stop - start + 1 > MAX_LOOP:
                    raise DSLError(
                        f"this loop expands its body {stop - start + 1} times; at most "
                        f"{MAX_LOOP} are allowed (a loop is unrolled into the graph)",
                        stmt.loc,
                        "loop over layers, not steps: a recurrence over t needs no loop",
                    )
                for k in range(start, stop + 1):
                    flat.extend(self._flatten(scope, stmt.body, {**bindings, stmt.var: k}))
            else:
                flat.append((stmt, bindings))
        return flat

    def _lower_body(self, scope: Scope, body, bindings: dict) -> None:
        flat = self._flatten(scope, body, bindings)
        for stmt, env in flat:
            self._declare(scope, stmt, env)
        for stmt, env in flat:
            frame = Frame(scope, env)
            if isinstance(stmt, ast.Assign):
                name = self.target_name(stmt.target, frame)
                frame.call_name = name
                scope.values[name] = self.eval(stmt.value, frame)
                scope.assigned_later.discard(name)
            elif isinstance(stmt, ast.Equation) and not _is_init(stmt):
                self.equation(scope, self.target_name(stmt.target, frame))
            elif isinstance(stmt, ast.Return):
                if not scope.prefix:
                    raise DSLError(
                        "`return` ends a `def`; a model's results are its named values",
                        stmt.loc,
                        "remove the line, or name the value: out = ...",
                    )
                scope.result = self.eval(stmt.value, frame)

    def _declare(self, scope: Scope, stmt, bindings: dict) -> None:
        frame = Frame(scope, bindings)
        if isinstance(stmt, ast.InputDecl):
            self._declare_input(scope, stmt, frame)
        elif isinstance(stmt, ast.ParamDecl):
            self._declare_param(scope, stmt, frame)
        elif isinstance(stmt, ast.Equation):
            name = self.target_name(stmt.target, frame)
            table = scope.inits if _is_init(stmt) else scope.equations
            if name in table:
                raise DSLError(f"'{name}' is defined twice", stmt.loc)
            table[name] = (stmt, bindings)
            if _makes_axes(stmt):
                self._new_axes(scope, stmt)
        elif isinstance(stmt, ast.Assign):
            scope.assigned_later.add(self.target_name(stmt.target, frame))

    def _new_axes(self, scope: Scope, stmt: ast.Equation) -> None:
        """`p(i, j) = patches(...)`: the left side names two new axes. In a definition they
        are made unique per call (`blk1_i`), so a block can be used twice."""
        for e in stmt.index:
            if not isinstance(e, ast.Name) or e.id in scope.values or e.id in self.graph.axes:
                raise DSLError(
                    "patches() makes new axes: index its equation by new names, e.g. p(i, j)",
                    e.loc,
                )
            actual = e.id
            if scope.prefix:
                actual = re.sub(r"\W", "_", scope.prefix) + "_" + e.id
            while actual in self.graph.axes:
                actual += "_"
            self.graph.axes = self.graph.axes + (actual,)
            self.new_axes.add(actual)
            scope.values[e.id] = Axis(actual)

    def _declare_input(self, scope: Scope, stmt: ast.InputDecl, frame: Frame) -> None:
        if scope.prefix:
            raise DSLError(
                "inputs and targets are declared in the model, not in a definition", stmt.loc
            )
        shape = self.dims(stmt.dims, frame)
        repeated = sorted({a for a in stmt.over if list(stmt.over).count(a) > 1})
        if repeated:
            raise DSLError(
                f"'{stmt.name}' lists the axis {', '.join(repeated)} twice after `over`",
                stmt.loc,
                "name each axis once, e.g. `over t` or `over i, j`",
            )
        for axis in stmt.over:
            if axis not in self.graph.axes:
                self.graph.axes = self.graph.axes + (axis,)
        node = input_node(stmt.name, shape, stmt.over, stmt.loc, role=stmt.kind)
        (self.graph.inputs if stmt.kind == "input" else self.graph.targets)[stmt.name] = node
        scope.values[stmt.name] = node
        scope.index_axes[stmt.name] = tuple(stmt.over)

    def _declare_param(self, scope: Scope, stmt: ast.ParamDecl, frame: Frame) -> None:
        shape = self.dims(stmt.dims, frame)
        name = scope.qualified(stmt.name)
        if name in self.graph.params:
            raise DSLError(f"parameter '{name}' is declared twice", stmt.loc)
        init = self._initializer(stmt, frame, shape)
        node = param_node(name, shape, init, stmt.loc)
        self.graph.params[name] = node
        scope.values[stmt.name] = node

    def _initializer(self, stmt: ast.ParamDecl, frame: Frame, shape) -> tuple:
        """(name, arguments in order): every argument the file writes is checked against
        the initialiser's signature and range, positional or keyword."""
        if stmt.init is None:
            return ("glorot_uniform", ()) if len(shape) >= 2 else ("zeros", ())
        expr, args, kwargs = stmt.init, (), {}
        if isinstance(expr, ast.Call):
            args = tuple(self.eval(a, frame) for a in expr.args)
            kwargs = {k: self.eval(v, frame) for k, v in expr.kwargs}
            expr = expr.func
        if not isinstance(expr, ast.Name) or expr.id not in INITIALIZERS:
            known = ", ".join(sorted(INITIALIZERS))
            raise DSLError(f"unknown initialiser; known ones are {known}", stmt.init.loc)
        for value in (*args, *kwargs.values()):
            if isinstance(value, Node) or not isinstance(value, (int, float)):
                raise DSLError(
                    f"initialiser arguments must be numbers, got {describe(value)}; "
                    "they may be expressions of sizes and numbers, e.g. uniform(1.0 / sqrt(H))",
                    stmt.init.loc,
                )
        try:
            return (expr.id, bind_arguments(expr.id, args, kwargs))
        except GraphRNNError as e:
            raise DSLError(str(e), stmt.init.loc) from None

    def dims(self, exprs, frame: Frame) -> tuple[int, ...]:
        return tuple(positive(self.eval(e, frame), "a size", e.loc) for e in exprs)

    def target_name(self, target: ast.Target, frame: Frame) -> str:
        if target.subscript is None:
            return target.name
        k = integer(self.eval(target.subscript, frame), "a subscript", target.subscript.loc)
        return f"{target.name}[{k}]"

    # ---- equations -------------------------------------------------------------------
    def equation(self, scope: Scope, name: str) -> Node:
        """The node of equation `name`, lowering it on first use."""
        if name in scope.lowered:
            return scope.lowered[name]
        stmt, bindings = scope.equations[name]
        if name in scope.busy:
            names = ", ".join(f"'{n}'" for n in sorted(scope.busy))
            raise CausalityError(
                f"the equations {names} depend on each other at the same step"
                if len(scope.busy) > 1
                else f"'{name}' depends on itself at the same step",
                stmt.loc,
                f"read an earlier step, e.g. {name}({_axes_text(stmt, -1)})",
            )
        alias = self.placeholder(scope, name)
        frame = Frame(scope, bindings, equation=name)
        axes = scope.index_axes[name]
        scope.busy.add(name)
        try:
            value = self.eval(stmt.value, frame)
        finally:
            scope.busy.discard(name)
        value = self._fit_equation(scope, name, stmt, as_node(value, stmt.value.loc), axes)
        if value.name is not None or value.op in ("input", "param", "alias", "const"):
            value = apply("add", value, const(0.0), name=scope.qualified(name), loc=stmt.loc)
        else:
            value.name, value.loc = scope.qualified(name), stmt.loc
        bind(alias, value)
        scope.lowered[name] = value
        return value

    def placeholder(self, scope: Scope, name: str) -> Node:
        if name not in scope.placeholders:
            stmt = scope.equations[name][0]
            axes = self._equation_axes(stmt, Frame(scope, scope.equations[name][1]))
            context = Context(frozenset(axes) | scope.hidden_axes, True)
            scope.placeholders[name] = placeholder(None, context, scope.qualified(name), stmt.loc)
            scope.index_axes[name] = axes
        return scope.placeholders[name]

    def _equation_axes(self, stmt: ast.Equation, frame: Frame) -> tuple[str, ...]:
        axes = []
        for e in stmt.index:
            if isinstance(e, ast.Name) and e.id in frame.scope.equations:
                raise DSLError(
                    f"'{e.id}' names an equation, not an axis, so it cannot index the left side",
                    e.loc,
                    "index an equation by its axis, e.g. h(t); name values and axes apart",
                )
            axis = self.eval(e, frame) if isinstance(e, ast.Name) else None
            if not isinstance(axis, Axis):
                raise DSLError(
                    "an equation's left side is indexed by axis names, e.g. h(t) or d(i, j); "
                    "use h(0) = ... for the initial value",
                    e.loc,
                )
            axes.append(axis.name)
        return tuple(axes)

    def _fit_equation(self, scope, name, stmt, value: Node, axes) -> Node:
        extra = value.axes - set(axes) - scope.hidden_axes
        if extra:
            raise DSLError(
                f"the right side varies over {', '.join(sorted(extra))}, "
                f"but the equation defines {name}({', '.join(axes)})",
                stmt.value.loc,
                f"in the equation for '{name}'",
            )
        for axis in axes:
            if axis not in value.axes:
                value = apply("expand_axis", value, axis=axis)
        return value

    def init_value(self, scope: Scope, name: str, loc: Loc) -> Node:
        key = ("init", name)
        if key in scope.delays:
            return scope.delays[key]
        if name not in scope.inits:
            raise DSLError(
                f"'{name}' is read at a shifted step but has no initial value",
                loc,
                f"add `{name}(0) = ...` (e.g. zeros(n)) for the value outside the sequence",
            )
        stmt, bindings = scope.inits[name]
        value = as_node(self.eval(stmt.value, Frame(scope, bindings, equation=name)), stmt.loc)
        if value.axes - scope.hidden_axes:
            raise DSLError(f"the initial value of '{name}' must not vary over an axis", stmt.loc)
        if value.name is None:
            value.name, value.loc = scope.qualified(f"{name}(0)"), stmt.loc
        scope.delays[key] = value
        return value

    # ---- expressions -----------------------------------------------------------------
    def eval(self, expr, frame: Frame):
        return expressions.evaluate(self, expr, frame)

    def lookup(self, name: str, frame: Frame, loc: Loc):
        scope = frame.scope
        if name in frame.bindings:
            return frame.bindings[name]
        if name in scope.equations:
            return self.equation(scope, name)
        if name in scope.values:
            return scope.values[name]
        if self.graph is not None and name in self.graph.axes and not scope.prefix:
            return Axis(name)
        if name in self.defs:
            return self.defs[name]
        if is_builtin(name):
            return Builtin(name)
        if name in scope.assigned_later:
            raise DSLError(f"'{name}' is used before it is assigned", loc, where(frame))
        raise DSLError(f"unknown name '{name}'", loc, where(frame))

    def new_prefix(self, scope: Scope, hint: str | None, func: str) -> str:
        base = hint or func
        candidate, k = scope.qualified(base), 2
        while candidate in self.used_prefixes:
            candidate, k = scope.qualified(f"{base}{k}"), k + 1
        self.used_prefixes.add(candidate)
        return candidate


def _check_unique_names(module: ast.Module) -> None:
    """Two models (or two definitions) of one name: the second would be silently ignored."""
    seen: dict[tuple[type, str], ast.ModelDef | ast.FuncDef] = {}
    for item in module.items:
        key = (type(item), item.name)
        if key in seen:
            kind = "model" if isinstance(item, ast.ModelDef) else "definition"
            raise DSLError(
                f"the {kind} '{item.name}' is defined twice in this file",
                item.loc,
                f"the first is at {seen[key].loc}; rename or remove one",
            )
        seen[key] = item


def _makes_axes(stmt: ast.Equation) -> bool:
    value = stmt.value
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "patches"
        and not _is_init(stmt)
    )


def _is_init(stmt: ast.Equation) -> bool:
    return len(stmt.index) >= 1 and isinstance(stmt.index[0], ast.Num) and stmt.index[0].value == 0


def _axes_text(stmt: ast.Equation, offset: int) -> str:
    names = [e.id if isinstance(e, ast.Name) else "?" for e in stmt.index]
    return ", ".join([f"{names[0]}{offset:+d}"] + names[1:]) if names else "t-1"


__all__ = ["MODES", "lower_model", "Lowerer", "Axis", "Frame", "Scope"]
