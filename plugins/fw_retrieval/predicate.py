"""A small, safe predicate language over label and metadata columns (parsed, never evaluated).

Grammar (keywords are lower case; ``#`` is not special)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | atom
    atom       := "(" expr ")" | "true" | "false" | comparison
    comparison := NAME ("==" | "!=") literal
                | NAME ["not"] "in" "[" [literal ("," literal)* [","]] "]"
    literal    := INTEGER | STRING          (STRING: '...' or "..." with \\-escapes of the quote)
    NAME       := [A-Za-z_][A-Za-z0-9_]*    (a column: ``label`` or a metadata column)

Example: ``label in [3, 5] and not medium == "photo"``. :func:`parse` turns text into a tree
of :class:`Cmp`, :class:`And`, :class:`Or`, :class:`Not` and :class:`Const` nodes;
:class:`Columns` evaluates one over every row (a boolean mask) and :func:`to_literals` pushes
the negations down to the comparisons (negation normal form), which is what the inverted index
of :mod:`fw_retrieval.tree` compiles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fw.errors import FwError

Value = int | str


class PredicateError(FwError, ValueError):
    """A ``--where`` condition is malformed or names an unknown column or value type."""


@dataclass(frozen=True)
class Cmp:
    """``column`` takes one of ``values`` (``negated``: none of them)."""

    column: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class And:
    """Both sides hold."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    """Either side holds."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    """The operand does not hold."""

    operand: Node


@dataclass(frozen=True)
class Const:
    """Always ``value``."""

    value: bool


Node = Cmp | And | Or | Not | Const

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?![A-Za-z_\d.]))
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|\(|\)|\[|\]|,)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_MAX_LENGTH = 10_000
_MAX_DEPTH = 200


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, str, name, kw, op, end
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            bad = text[start : start + 12]
            raise PredicateError(
                f"--where: unexpected {bad!r} at character {start} of {text!r}; a condition "
                "uses column names, ==, !=, in [..], and, or, not, parentheses, integers and "
                "quoted strings"
            )
        group = m.lastgroup or ""
        token, kind = m.group(group), group
        if kind == "name" and token in _KEYWORDS:
            kind = "kw"
        out.append(_Tok(kind, token, m.start(group)))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, what: str, tok: _Tok) -> PredicateError:
        got = "the end" if tok.kind == "end" else repr(tok.text)
        return PredicateError(
            f"--where: expected {what} at character {tok.pos} of {self.text!r}, got {got} "
            '(example: label in [3, 5] and not medium == "photo")'
        )

    def expect(self, kind: str, text: str | None, what: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise self.fail(what, tok)
        return tok

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise PredicateError(f"--where: nested deeper than {_MAX_DEPTH} levels")
        node = self.and_expr()
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            node = Or(node, self.and_expr())
        self.depth -= 1
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            node = And(node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        negations = 0
        while self.peek().kind == "kw" and self.peek().text == "not":
            self.take()
            negations += 1
        node = self.atom()
        return Not(node) if negations % 2 else node

    def atom(self) -> Node:
        tok = self.take()
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.expect("op", ")", "')'")
            return node
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return Const(tok.text == "true")
        if tok.kind != "name":
            raise self.fail("a column name, 'not' or '('", tok)
        op = self.take()
        if op.kind == "op" and op.text in ("==", "!="):
            return Cmp(tok.text, (self.literal(),), op.text == "!=")
        negated = False
        if op.kind == "kw" and op.text == "not":
            negated, op = True, self.take()
        if op.kind == "kw" and op.text == "in":
            return Cmp(tok.text, self.values(), negated)
        raise self.fail(f"'==', '!=', 'in' or 'not in' after column {tok.text!r}", op)

    def values(self) -> tuple[Value, ...]:
        self.expect("op", "[", "'[' opening a list of values")
        out: list[Value] = []
        while not (self.peek().kind == "op" and self.peek().text == "]"):
            out.append(self.literal())
            if self.peek().kind == "op" and self.peek().text == ",":
                self.take()
            elif not (self.peek().kind == "op" and self.peek().text == "]"):
                raise self.fail("',' or ']'", self.peek())
        self.take()
        return tuple(out)

    def literal(self) -> Value:
        tok = self.take()
        if tok.kind == "num":
            return int(tok.text)
        if tok.kind == "str":
            return _unquote(tok.text)
        raise self.fail("an integer or a quoted string", tok)


def parse(text: str) -> Node:
    """The syntax tree of a condition; `PredicateError` says what is wrong and where."""
    if not isinstance(text, str):
        raise PredicateError(f"--where must be text, got {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        raise PredicateError(f"--where is longer than {_MAX_LENGTH} characters")
    parser = _Parser(text)
    if parser.peek().kind == "end":
        raise PredicateError("--where is empty; leave it out to search every row")
    node = parser.expr()
    if parser.peek().kind != "end":
        raise parser.fail("'and', 'or' or the end", parser.peek())
    return node


def to_literals(node: Node, negate: bool = False) -> Node:
    """``node`` in negation normal form: no `Not`, negations folded into `Cmp.negated`."""
    if isinstance(node, Not):
        return to_literals(node.operand, not negate)
    if isinstance(node, Const):
        return Const(node.value != negate)
    if isinstance(node, Cmp):
        return Cmp(node.column, node.values, node.negated != negate)
    left, right = to_literals(node.left, negate), to_literals(node.right, negate)
    is_and = isinstance(node, And) != negate  # De Morgan
    return And(left, right) if is_and else Or(left, right)


def columns_of(node: Node) -> set[str]:
    """Every column a condition names."""
    if isinstance(node, Cmp):
        return {node.column}
    if isinstance(node, Not):
        return columns_of(node.operand)
    if isinstance(node, (And, Or)):
        return columns_of(node.left) | columns_of(node.right)
    return set()


class Columns:
    """Categorical columns of a corpus: per column its sorted distinct values and a code per row.

    ``Columns({"label": labels, "medium": media})`` with one entry per row in each. Values are
    integers or strings; a condition comparing a column with the other type is refused.
    """

    def __init__(self, columns: Mapping[str, Sequence[Value] | np.ndarray]) -> None:
        self.values: dict[str, np.ndarray] = {}
        self.codes: dict[str, np.ndarray] = {}
        self.n = -1
        for name, column in columns.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in _KEYWORDS:
                raise PredicateError(
                    f"column name {name!r} cannot be used in a condition; rename it to letters, "
                    "digits and '_' (not a keyword)"
                )
            array = np.asarray(column)
            if array.ndim != 1:
                raise PredicateError(f"column {name!r} must be 1-D, got shape {array.shape}")
            if array.dtype.kind in "iub":
                array = array.astype(np.int64)
            elif array.dtype.kind in "USO":
                array = array.astype(str)
            else:
                raise PredicateError(
                    f"column {name!r} has {array.dtype} values; conditions compare integers or "
                    "strings (round or bin real-valued metadata first)"
                )
            if self.n >= 0 and len(array) != self.n:
                raise PredicateError(f"column {name!r} has {len(array)} rows, the others {self.n}")
            self.n = len(array)
            uniq, codes = np.unique(array, return_inverse=True)
            self.values[name], self.codes[name] = uniq, codes.astype(np.int64).ravel()

    def take(self, rows: np.ndarray) -> Columns:
        """The same columns restricted to ``rows``."""
        out = Columns({})
        out.n = len(rows)
        for name in self.values:
            out.values[name] = self.values[name]
            out.codes[name] = self.codes[name][rows]
        return out

    def value_codes(self, cmp: Cmp) -> np.ndarray:
        """Codes of the values a comparison names that occur in its column (absent ones drop)."""
        if cmp.column not in self.values:
            known = ", ".join(sorted(self.values)) or "none"
            raise PredicateError(
                f"--where names column {cmp.column!r}, which the index does not have "
                f"(columns: {known})"
            )
        uniq = self.values[cmp.column]
        is_int = uniq.dtype.kind == "i"
        for v in cmp.values:
            if isinstance(v, int) != is_int:
                want = "integers" if is_int else "quoted strings"
                raise PredicateError(
                    f"--where compares column {cmp.column!r} with {v!r}, but its values are {want}"
                )
        wanted = np.asarray(cmp.values, dtype=uniq.dtype) if cmp.values else uniq[:0]
        pos = np.searchsorted(uniq, wanted)
        found = pos < len(uniq)
        found[found] = uniq[pos[found]] == wanted[found]
        return np.unique(pos[found])

    def mask(self, node: Node) -> np.ndarray:
        """The rows that satisfy ``node``, as a boolean array."""
        if isinstance(node, Const):
            return np.full(self.n, node.value)
        if isinstance(node, Not):
            return ~self.mask(node.operand)
        if isinstance(node, And):
            return self.mask(node.left) & self.mask(node.right)
        if isinstance(node, Or):
            return self.mask(node.left) | self.mask(node.right)
        hit = np.zeros(len(self.values[node.column]) if node.column in self.values else 0, bool)
        hit[self.value_codes(node)] = True
        out = hit[self.codes[node.column]]
        return ~out if node.negated else out
