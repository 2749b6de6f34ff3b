"""Text -> syntax tree for the model language, with every mistake reported as a DSLError.

Lark's LALR parser builds a parse tree (iteratively, so deep nesting cannot overflow the
Python stack); a non-recursive transformer turns it into the frozen nodes of ``ast.py``.
Whatever lark raises is translated here into a message a model author can act on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedToken,
    VisitError,
)
from lark.indenter import Indenter
from lark.lexer import PatternStr

from graphrnn.dsl import ast
from graphrnn.errors import DSLError, GraphRNNError, Loc, Source

GRAMMAR = Path(__file__).with_name("grammar.lark")

#: Deepest parse tree accepted: keeps later recursive passes far from Python's stack limit.
MAX_DEPTH = 200

_OPEN = {"LPAR": "(", "LSQB": "["}
_CLOSE = {"RPAR", "RSQB"}


class _IndentState:
    """Per-parse state of the indenter: the open blocks and the open brackets."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.indents = [""]
        self.brackets: list[Token] = []
        self.started = False  # seen a token (so later indentation comes from newlines)
        self.last: Token | None = None  # the last token that is not a newline
        self.before_last: Token | None = None


class _Indenter(Indenter):
    """Turns newlines into _NL/_INDENT/_DEDENT tokens, the way Python does.

    Indentation is compared as text, not as a column count: a block is deeper when its
    indentation starts with the enclosing block's, so tabs and spaces may be used as long
    as they are used the same way on every line of a block.
    """

    NL_type = "_NL"
    OPEN_PAREN_types = list(_OPEN)
    CLOSE_PAREN_types = list(_CLOSE)
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def start(self, source: Source) -> None:
        self._local.state = _IndentState(source)

    @property
    def state(self) -> _IndentState:
        return self._local.state

    def process(self, stream: Iterable[Token]) -> Iterator[Token]:
        return self._tokens(self.state, stream)

    def _tokens(self, st: _IndentState, stream: Iterable[Token]) -> Iterator[Token]:
        for token in stream:
            if token.type == self.NL_type:
                if not st.brackets:
                    yield from self._newline(st, token)
                continue
            if not st.started and token.column != 1:
                raise DSLError("unexpected indent", _token_loc(st.source, token))
            st.started = True
            st.before_last, st.last = st.last, token
            yield token
            if token.type in _OPEN:
                st.brackets.append(token)
            elif token.type in _CLOSE and st.brackets:
                st.brackets.pop()
        for _ in st.indents[1:]:
            yield self._eof_dedent(st)

    def _newline(self, st: _IndentState, token: Token) -> Iterator[Token]:
        yield token
        st.started = True
        if "\n" not in token.value:
            return
        indent = token.value.rsplit("\n", 1)[1]
        line = token.end_line
        if indent == st.indents[-1]:
            return
        if indent.startswith(st.indents[-1]):
            st.indents.append(indent)
            yield Token(self.INDENT_type, indent, token.end_pos, line, 1, line, len(indent) + 1)
            return
        if indent not in st.indents:
            raise DSLError(_indent_message(indent, st.indents), _indent_loc(st, line, indent))
        at_eof = token.end_pos >= len(st.source.text)
        while st.indents[-1] != indent:
            st.indents.pop()
            if at_eof:
                yield self._eof_dedent(st)
            else:
                yield Token(self.DEDENT_type, indent, token.end_pos, line, 1, line, len(indent) + 1)

    def _eof_dedent(self, st: _IndentState) -> Token:
        last = st.last
        if last is None:
            return Token(self.DEDENT_type, "<eof>", 0, 1, 1, 1, 1)
        return Token(self.DEDENT_type, "<eof>", last.end_pos, last.end_line, last.end_column)


def _indent_message(indent: str, indents: list[str]) -> str:
    if len(set(indent).union(*indents)) <= 1:
        return "inconsistent indentation: this line matches no enclosing block"
    return "inconsistent indentation: tabs and spaces mixed differently from the lines above"


def _indent_loc(st: _IndentState, line: int, indent: str) -> Loc:
    return Loc(st.source, line, 1, line, len(indent) + 1)


def _token_loc(source: Source, token: Token) -> Loc:
    return Loc(source, token.line, token.column, token.end_line, token.end_column)


def _takes_space(node: object) -> bool:
    """Layout tokens do not count in a node's span (a block ends at its last statement)."""
    return not (isinstance(node, Token) and node.type in ("_NL", "_INDENT", "_DEDENT"))


@lru_cache(maxsize=1)
def _lark() -> tuple[lark.Lark, _Indenter]:
    indenter = _Indenter()
    parser = lark.Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="basic",
        postlex=indenter,
        propagate_positions=_takes_space,
        maybe_placeholders=True,
    )
    return parser, indenter


# Public entry points -------------------------------------------------------------------


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse the text of a model file; raise DSLError, at its place, for any mistake."""
    source = Source(path, text)
    parser, indenter = _lark()
    indenter.start(source)
    try:
        tree = parser.parse(text + "\n")
    except LarkError as error:
        raise _translate(error, source, indenter.state) from None
    _check_depth(tree, source)
    try:
        module = _ToAst(source).transform(tree)
    except VisitError as error:
        raise error.orig_exc from None
    if not module.items:
        raise DSLError("no model in file", Loc(source, 1, 1, 1, 1))
    return module


def parse_file(path: str | Path) -> ast.Module:
    """Read and parse a model file (UTF-8); a missing or unreadable file is a GraphRNNError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphRNNError(
            f"model file not found: {file} (check the path; it is relative to {Path.cwd()})"
        ) from None
    except UnicodeDecodeError as error:
        raise _not_utf8(str(path), error) from None
    except OSError as error:
        raise GraphRNNError(f"cannot read model file {file}: {error.strerror}") from None
    return parse(text, str(path))


def _not_utf8(path: str, error: UnicodeDecodeError) -> DSLError:
    """The first byte that is not UTF-8, at its line and column (Latin-1 or binary files)."""
    data = bytes(error.object)
    start = error.start
    line = data.count(b"\n", 0, start) + 1
    col = start - (data.rfind(b"\n", 0, start) + 1) + 1
    source = Source(path, data.decode("utf-8", errors="replace"))
    loc = Loc(source, line, col, line, col + 1)
    return DSLError(
        f"the model file is not UTF-8 text: byte 0x{data[start]:02x} cannot be decoded "
        f"({error.reason})",
        loc,
        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out); model files are text",
    )


# Syntax errors -------------------------------------------------------------------------

_CATEGORY_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "_NL": "end of line",
    "_INDENT": "an indented block",
    "_DEDENT": "end of block",
    "$END": "end of file",
}
_EXPR_START = {"NAME", "NUMBER", "LPAR", "MINUS", "PLUS"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT"}
_POSTFIX = {"LPAR", "LSQB", "DOT"}
_STMT_START = {"INPUT", "TARGET", "PARAM", "RETURN", "FOR", "NAME"}
_MAX_EXPECTED = 5


def _translate(error: LarkError, source: Source, st: _IndentState) -> DSLError:
    """The DSLError that explains ``error``, a failure inside lark."""
    if isinstance(error, UnexpectedCharacters):
        loc = Loc(source, error.line, error.column, error.line, error.column + 1)
        return DSLError(f"unexpected character {error.char!r}", loc, _bracket_note(st, loc))
    if isinstance(error, UnexpectedToken):
        return _unexpected_token(error, source, st)
    if isinstance(error, UnexpectedEOF):
        return DSLError("unexpected end of file", _eof_loc(source, st), _bracket_note(st, None))
    return DSLError(f"cannot parse: {str(error).splitlines()[0] if str(error) else error!r}")


def _unexpected_token(error: UnexpectedToken, source: Source, st: _IndentState) -> DSLError:
    token = error.token
    what = _describe_token(token)
    if token.type == "$END" or token.value == "<eof>":
        loc = _eof_loc(source, st)
    elif token.type == "_NL":
        loc = Loc(source, token.line, token.column, token.line, token.column + 1)
    else:
        loc = _token_loc(source, token)
    expected = _describe_expected(_accepted(error))
    message = f"unexpected {what}" + (f"; expected {expected}" if expected else "")
    at_end = what == "end of file"
    note = _reduce_note(token, st) or _bracket_note(st, None if at_end else loc)
    return DSLError(message, loc, note)


def _reduce_note(token: Token, st: _IndentState) -> str | None:
    """`a + mean over t of b` fails at 'over': a reduction is never a bare operand."""
    before = st.before_last
    if token.type == "OVER" and before is not None and before.value in ("mean", "sum"):
        return f"an operand must be in parentheses: ({before.value} over AXIS of ...)"
    return None


def _accepted(error: UnexpectedToken) -> set[str]:
    """The terminals that could really come next.

    ``error.expected`` is the LALR state's lookahead, merged over every context that shares
    the state; asking the interactive parser gives the exact set for this context.
    """
    try:
        return set(error.interactive_parser.accepts())
    except (LarkError, AttributeError):
        return set(error.expected)


def _describe_token(token: Token) -> str:
    if token.type == "$END" or token.value == "<eof>":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    if token.type == "_INDENT":
        return "indent"
    if token.type == "_DEDENT":
        return "end of block"
    text = str(token.value)
    return repr(text if len(text) <= 20 else text[:17] + "...")


def _describe_expected(expected: Iterable[str]) -> str:
    """``expected`` (terminal names) in words, or "" when the list would not help."""
    left = set(expected)
    words: list[str] = []
    if _STMT_START <= left:
        words.append("a statement")
        left -= _STMT_START
    if {"NAME", "NUMBER"} <= left:
        words.append("an expression")
        left -= _EXPR_START
    if _OPERATORS <= left:
        words.append("an operator")
        left -= _OPERATORS | _POSTFIX
    words += sorted(_terminal_text(name) for name in left if name not in _CATEGORY_NAMES)
    if "$END" in left:
        left.discard("_NL")  # blank lines are always allowed where a file may end
    words += [_CATEGORY_NAMES[name] for name in _CATEGORY_NAMES if name in left]
    if not words or len(words) > _MAX_EXPECTED:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _terminal_text(name: str) -> str:
    parser, _ = _lark()
    for terminal in parser.terminals:
        if terminal.name == name and isinstance(terminal.pattern, PatternStr):
            return repr(terminal.pattern.value)
    return name.lower()


def _eof_loc(source: Source, st: _IndentState) -> Loc:
    """Just after the last token, where the missing text would go."""
    last = st.last
    if last is None:
        return Loc(source, 1, 1, 1, 1)
    return Loc(source, last.end_line, last.end_column, last.end_line, last.end_column + 1)


def _bracket_note(st: _IndentState, loc: Loc | None) -> str | None:
    """Points at an unclosed bracket when the error comes later than its line."""
    if not st.brackets:
        return None
    opened = st.brackets[-1]
    if loc is not None and loc.line == opened.line:
        return None
    return f"note: the '{_OPEN[opened.type]}' at line {opened.line} is never closed"


def _check_depth(tree: Tree, source: Source) -> None:
    """Rejects absurdly deep nesting before any recursive code sees the tree."""
    stack: list[tuple[Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            loc = Loc(source, meta.line, meta.column, meta.end_line, meta.end_column)
            raise DSLError(f"expression nested too deeply (more than {MAX_DEPTH} levels)", loc)
        stack += [(child, depth + 1) for child in node.children if isinstance(child, Tree)]


# Parse tree -> AST ---------------------------------------------------------------------


class _Kwarg:
    """A ``name = value`` call argument, until ``call`` sorts arguments into args/kwargs."""

    def __init__(self, name: str, value: ast.Expr, loc: Loc) -> None:
        self.name, self.value, self.loc = name, value, loc


@lark.v_args(meta=True)
class _ToAst(lark.visitors.Transformer_NonRecursive):
    """Builds ast nodes bottom-up; one method per grammar rule (or alias)."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def _loc(self, meta) -> Loc:
        return Loc(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tloc(self, token: Token) -> Loc:
        return _token_loc(self.source, token)

    # Definitions

    def start(self, meta, items):
        lines = self.source.text.split("\n")
        loc = Loc(self.source, 1, 1, len(lines), len(lines[-1]) + 1)
        return ast.Module(tuple(items), self.source, loc)

    def model(self, meta, children):
        name, params, body = children
        params = params or ()
        _check_unique(params, "size parameter")
        return ast.ModelDef(str(name), params, body, self._loc(meta))

    def size_params(self, meta, children):
        return tuple(c for c in children if c is not None)

    def size_param(self, meta, children):
        name, default = children
        return ast.SizeParam(str(name), default, self._loc(meta))

    def funcdef(self, meta, children):
        name, params, body = children
        params = params or ()
        _check_unique(params, "parameter")
        _check_default_order(params)
        return ast.FuncDef(str(name), params, body, self._loc(meta))

    func_params = size_params

    def func_param(self, meta, children):
        name, over, default = children
        over = None if over is None else str(over)
        return ast.FuncParam(str(name), over, default, self._loc(meta))

    # Statements

    def suite(self, meta, children):
        return tuple(s for c in children for s in (c if isinstance(c, tuple) else (c,)))

    def simple_stmts(self, meta, children):
        return tuple(c for c in children if c is not None)

    def input_decl(self, meta, children):
        kind, name, dims, over = children
        return ast.InputDecl(str(kind), str(name), dims or (), over or (), self._loc(meta))

    def over_axes(self, meta, children):
        return tuple(str(c) for c in children)

    def dims(self, meta, children):
        return tuple(c for c in children if c is not None)

    def param_decl(self, meta, children):
        name, dims, init = children
        return ast.ParamDecl(str(name), dims or (), init, self._loc(meta))

    def equation(self, meta, children):
        target, *index, value = children
        return ast.Equation(target, tuple(index), value, self._loc(meta))

    def assign(self, meta, children):
        target, value = children
        return ast.Assign(target, value, self._loc(meta))

    def target(self, meta, children):
        name, subscript = children
        return ast.Target(str(name), subscript, self._loc(meta))

    def return_stmt(self, meta, children):
        (value,) = children
        return ast.Return(value, self._loc(meta))

    def for_stmt(self, meta, children):
        var, start, stop, body = children
        return ast.For(str(var), start, stop, body, self._loc(meta))

    # Expressions

    def reduce(self, meta, children):
        kind, axis, body = children
        if kind not in ("mean", "sum"):
            raise DSLError(
                f"unknown reduction {str(kind)!r}",
                self._tloc(kind),
                "write 'mean over AXIS of ...' or 'sum over AXIS of ...'",
            )
        return ast.Reduce(str(kind), str(axis), body, self._loc(meta))

    def binop(self, meta, children):
        left, op, right = children
        return ast.BinOp(str(op), left, right, self._loc(meta))

    def neg(self, meta, children):
        _, operand = children
        return ast.Neg(operand, self._loc(meta))

    def pos(self, meta, children):
        return children[1]

    def call(self, meta, children):
        func, arguments = children
        args, kwargs = _sort_arguments(arguments or ())
        return ast.Call(func, args, kwargs, self._loc(meta))

    def args(self, meta, children):
        return tuple(c for c in children if c is not None)

    def kwarg(self, meta, children):
        name, value = children
        return _Kwarg(str(name), value, self._tloc(name))

    def subscript(self, meta, children):
        base, index = children
        return ast.Subscript(base, index, self._loc(meta))

    def attr(self, meta, children):
        base, name = children
        return ast.Attr(base, str(name), self._loc(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), self._loc(meta))

    def number(self, meta, children):
        return ast.Num(_number(children[0], self._loc(meta)), self._loc(meta))


def _number(text: str, loc: Loc) -> int | float:
    """The value of a NUMBER token; huge literals are errors rather than inf or ValueError."""
    if text.isdigit():
        if len(text) > 100:
            raise DSLError("integer literal too large", loc)
        return int(text)
    value = float(text)
    if value == float("inf"):
        raise DSLError("number too large for a float", loc)
    return value


def _sort_arguments(
    arguments: tuple[ast.Expr | _Kwarg, ...],
) -> tuple[tuple[ast.Expr, ...], tuple[tuple[str, ast.Expr], ...]]:
    args: list[ast.Expr] = []
    kwargs: dict[str, ast.Expr] = {}
    for argument in arguments:
        if isinstance(argument, _Kwarg):
            if argument.name in kwargs:
                raise DSLError(f"keyword argument {argument.name!r} given twice", argument.loc)
            kwargs[argument.name] = argument.value
        elif kwargs:
            raise DSLError(
                "positional argument after a keyword argument",
                argument.loc,
                "put positional arguments first: f(x, H, axis = t)",
            )
        else:
            args.append(argument)
    return tuple(args), tuple(kwargs.items())


def _check_unique(params: tuple[ast.SizeParam | ast.FuncParam, ...], what: str) -> None:
    seen: set[str] = set()
    for param in params:
        if param.name in seen:
            raise DSLError(f"{what} {param.name!r} is declared twice", param.loc)
        seen.add(param.name)


def _check_default_order(params: tuple[ast.FuncParam, ...]) -> None:
    """Like Python: once a parameter has a default, all the later ones need one."""
    defaulted = False
    for param in params:
        if param.default is None and defaulted:
            raise DSLError(
                f"parameter {param.name!r} needs a default: it follows one that has a default",
                param.loc,
            )
        defaulted = defaulted or param.default is not None
