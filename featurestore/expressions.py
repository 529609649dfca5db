"""Free predicates (``--where``) parsed into pyarrow expressions.

One evaluator for every path: a parsed predicate is a ``pyarrow.compute.Expression``, so the
same object prunes Parquet row groups by their statistics, filters rows while scanning, and
filters a joined table afterwards. The grammar is a safe subset of Python, parsed with
:mod:`ast` and never evaluated:

- column names and literals (strings, numbers, ``True``/``False``/``None``); a column whose
  name is not a Python name goes in backticks, as in pandas' ``query``
  (`` `cue type` == "main title" ``);
- comparisons ``== != < <= > >=``, chained (``1960 <= year < 1970``), ``in`` / ``not in`` a
  list of literals;
- ``and`` ``or`` ``not`` (and ``&`` ``|`` ``~``), arithmetic ``+ - * / //`` (``year // 10 == 196``);
- functions ``contains(col, "text")`` (case-insensitive substring), ``startswith(col, "text")``,
  ``isnull(col)``, ``notnull(col)``, ``between(col, lo, hi)`` (inclusive).
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


class QueryError(ValueError):
    """A filter that cannot be applied: unknown column, bad expression, bad value."""


@dataclass(frozen=True)
class Predicate:
    """A parsed ``--where`` expression: its text, the columns it reads, and its expression."""

    text: str
    columns: frozenset[str]
    expression: pc.Expression


_COMPARE = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__",
            ast.Gt: "__gt__", ast.GtE: "__ge__"}
_ARITH = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply"}


# a string literal (left as it is) or a backticked column name
_QUOTED = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|`([^`]*)`""")


def quote_names(text: str) -> tuple[str, dict[str, str]]:
    """``text`` with each backticked column name replaced by a Python name that :mod:`ast`
    parses, and those names' columns."""
    names: dict[str, str] = {}

    def swap(match: re.Match) -> str:
        if match.group(2) is None:
            return match.group(1)
        stand_in = f"__quoted_{len(names)}__"
        names[stand_in] = match.group(2)
        return stand_in

    return _QUOTED.sub(swap, text), names


def unquote_names(text: str, names: dict[str, str]) -> str:
    """:func:`quote_names` undone: the stand-ins in ``text`` back in backticks."""
    for stand_in, name in names.items():
        text = text.replace(stand_in, f"`{name}`")
    return text


def _quoting_hint(source: str, columns: list[str]) -> str:
    """For an error message: how a column name may have lost its backticks, if it may have."""
    # a column whose name is not a Python name, written bare: its first word is in the text
    words = set(re.findall(r"\w+", source))
    bare = [c for c in columns if not c.isidentifier() and c.split()[:1] and
            c.split()[0] in words]
    if bare:
        return (f"; a column name such as {bare[0]!r} goes in backticks, `{bare[0]}` (in a "
                "shell, put the whole expression in single quotes)")
    if re.match(r"(==|!=|<|>|in\b|not\b)", source) and not source.startswith("not "):
        # what a shell leaves of "`cue type` == 'x'": it ran the backticks as a command
        return ("; it starts with a comparison: if a backticked name was there, the shell ran "
                "it as a command; put the whole expression in single quotes")
    return ""


def parse_where(text: str, columns: list[str]) -> Predicate:
    """Parse ``text`` over the given column names; raise :class:`QueryError` naming what is
    wrong (the unknown column with the known ones, or the unsupported construct)."""
    source, quoted = quote_names(text.strip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise QueryError(f"--where {text!r}: not a valid expression ({exc.msg})"
                         f"{_quoting_hint(source, columns)}") from None
    used: set[str] = set()
    known = set(columns)

    def fail(node: ast.AST, why: str):
        snippet = ast.get_source_segment(source, node) or type(node).__name__
        raise QueryError(f"--where {text!r}: {why}: {unquote_names(snippet, quoted)}")

    def literal(node: ast.AST):
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(
                node.value, (str, int, float, bool))):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(
                node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
            return -node.operand.value
        fail(node, "expected a literal")

    def column(node: ast.AST) -> pc.Expression:
        if not isinstance(node, ast.Name):
            fail(node, "expected a column name")
        name = quoted.get(node.id, node.id)
        if name not in known:
            hint = _quoting_hint(source, columns)
            close = difflib.get_close_matches(name.replace("_", " "), [
                c.replace("_", " ") for c in columns], n=1)
            near = [c for c in columns if close and c.replace("_", " ") == close[0]]
            guess = (f"; did you mean {near[0]!r}"
                     f"{f' (in backticks, `{near[0]}`)' if not near[0].isidentifier() else ''}?"
                     if near and not hint else "")
            raise QueryError(f"--where {text!r}: unknown column "
                             f"{unquote_names(name, quoted)!r} (columns: "
                             f"{', '.join(sorted(known))}){hint}{guess}")
        used.add(name)
        return pc.field(name)

    def value(node: ast.AST):
        if isinstance(node, ast.Constant):
            return pc.scalar(literal(node))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant):
                return pc.scalar(literal(node))
            return pc.negate(value(node.operand))
        return expr(node)

    def call(node: ast.Call) -> pc.Expression:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        args = node.args
        if node.keywords:
            fail(node, "keyword arguments are not supported")
        if name in ("contains", "startswith") and len(args) == 2:
            pattern = literal(args[1])
            if not isinstance(pattern, str):
                fail(args[1], f"{name}() needs a string")
            if name == "contains":
                return pc.match_substring(column(args[0]), pattern, ignore_case=True)
            return pc.starts_with(column(args[0]), pattern)
        if name in ("isnull", "notnull") and len(args) == 1:
            test = pc.is_null(column(args[0]), nan_is_null=True)
            return test if name == "isnull" else ~test
        if name == "between" and len(args) == 3:
            col = column(args[0])
            return (col >= pc.scalar(literal(args[1]))) & (col <= pc.scalar(literal(args[2])))
        fail(node, "unknown function or wrong number of arguments (known: contains(col, s), "
                   "startswith(col, s), isnull(col), notnull(col), between(col, lo, hi))")

    def compare(left: ast.AST, op: ast.cmpop, right: ast.AST) -> pc.Expression:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                fail(right, "'in' needs a list of literals")
            test = value(left).isin(pa.array([literal(e) for e in right.elts]))
            return test if isinstance(op, ast.In) else ~test
        if type(op) not in _COMPARE:
            fail(left, "unsupported comparison (for None use isnull(col))")
        return getattr(value(left), _COMPARE[type(op)])(value(right))

    def expr(node: ast.AST) -> pc.Expression:
        if isinstance(node, ast.BoolOp):
            parts = [expr(v) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            return ~expr(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            left, right = expr(node.left), expr(node.right)
            return (left & right) if isinstance(node.op, ast.BitAnd) else (left | right)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return getattr(pc, _ARITH[type(node.op)])(value(node.left), value(node.right))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.FloorDiv)):
            # Python's division, not integer division of integer columns
            quotient = pc.divide(value(node.left).cast(pa.float64()), value(node.right))
            return pc.floor(quotient) if isinstance(node.op, ast.FloorDiv) else quotient
        if isinstance(node, ast.Compare):
            out, left = None, node.left
            for op, right in zip(node.ops, node.comparators):
                part = compare(left, op, right)
                out = part if out is None else out & part
                left = right
            return out
        if isinstance(node, ast.Call):
            return call(node)
        if isinstance(node, ast.Name):
            return column(node)  # a boolean column on its own
        fail(node, "unsupported expression")

    expression = expr(tree.body)
    return Predicate(text, frozenset(used), expression)
