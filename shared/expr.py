"""A small, safe expression language for tag rules, stage rules and playbook triggers.

Rules are data that bank analysts write in YAML, so they are never handed to ``eval``. An
expression is parsed with :mod:`ast` (``mode="eval"``), checked once against a whitelist of
constructs and compiled into a tree of small Python closures; :meth:`Expression.evaluate`
walks that tree over a mapping of variables. Nothing is executed that the whitelist does
not name, and a forbidden construct fails at load time with its line and column.

>>> rule = compile_expression('tier == "high" and rfm_trend < -0.3')
>>> rule.evaluate({"tier": "high", "rfm_trend": -0.5})
True
>>> sorted(rule.names)
['rfm_trend', 'tier']

Values that are not known (``None``) never raise: ordering comparisons with them are False,
arithmetic with them gives None, and division by zero gives None.

>>> compile_expression("recency_days >= 90").evaluate({"recency_days": None})
False
>>> compile_expression("balance_change_90d / balance_90d_ago").evaluate(
...     {"balance_change_90d": -500, "balance_90d_ago": 0}) is None
True

Records such as an event are dicts, read with dots:

>>> trigger = compile_expression('event.to == "at_risk" and tier in ("high", "mid")')
>>> trigger.evaluate({"event": {"to": "at_risk", "from": "active"}, "tier": "mid"})
True
>>> explain(trigger, {"event": {"to": "at_risk", "from": "active"}, "tier": "mid"})
{'event.to': 'at_risk', 'tier': 'mid'}

Anything outside the language is rejected when the rule is loaded:

>>> compile_expression("tier == 1 or open('x')")
Traceback (most recent call last):
  ...
shared.expr.ExpressionError: line 1, col 14: function calls other than min, max, abs, round, \
len, coalesce, days_between, lower, contains are not allowed: open
>>> compile_expression("recency_dyas > 90", allowed_names={"recency_days", "tier"})
Traceback (most recent call last):
  ...
shared.expr.ExpressionError: line 1, col 1: unknown name 'recency_dyas' (did you mean \
'recency_days'?); allowed names: recency_days, tier

See docs/expressions.md for the analysts' reference.
"""

from __future__ import annotations

import ast
import difflib
import json
import numbers
import operator
import re
import types
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_NODES",
    "MAX_SEQUENCE_LENGTH",
    "MAX_SOURCE_LENGTH",
    "Expression",
    "ExpressionError",
    "compile_expression",
    "explain",
]

MAX_SOURCE_LENGTH: Final = 1000
"""Longest accepted source text, in characters."""
MAX_NODES: Final = 200
"""Most expression parts (names, constants, operators, calls, ...) in one expression."""
MAX_DEPTH: Final = 50
"""Deepest nesting of parts, which also bounds the evaluator's recursion."""
MAX_SEQUENCE_LENGTH: Final = 10_000
"""Longest text, list or tuple that ``+`` or ``*`` may build."""
MAX_INT_BITS: Final = 1024
"""Largest whole number (in bits, about 308 digits) an expression may write or compute."""
MAX_ROUND_DIGITS: Final = 20
"""Largest ``ndigits`` (either sign) accepted by ``round``."""

FUNCTIONS: Final = (
    "min", "max", "abs", "round", "len", "coalesce", "days_between", "lower", "contains",
)  # fmt: skip
"""The only functions an expression may call, in the order error messages list them."""


class ExpressionError(ValueError):
    """An expression that is not in the language, or that cannot be evaluated.

    ``reason`` says what is wrong; ``line`` and ``col`` (1-based, in characters) point at
    the construct when it is known; ``source`` is the expression's text.
    """

    def __init__(
        self,
        reason: str,
        line: int | None = None,
        col: int | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(reason, line, col, source)  # all in args, so it pickles whole
        self.reason = reason
        self.line = line
        self.col = col
        self.source = source

    def __str__(self) -> str:
        if self.line is None or self.col is None:
            return self.reason
        return f"line {self.line}, col {self.col}: {self.reason}"


_Run = Callable[[Mapping[str, Any]], Any]
_Compiled = tuple[_Run, bool]  # (closure, whether its value depends on no variable)
_Pos = tuple[int, int]  # (line, col), 1-based
_Key = str | int
_Step = tuple[_Key, bool, _Pos]  # (key, written as an attribute, where)
_NO_VARIABLES: Final[Mapping[str, Any]] = types.MappingProxyType({})
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Expression:
    """A checked expression; build one with :func:`compile_expression`.

    Immutable, hashable (by source) and safe to share between threads and tasks.

    >>> stage_rule = compile_expression(
    ...     "churn_probability >= 0.7 or (salary_stopped and balance_change_90d < -0.5)")
    >>> stage_rule
    Expression('churn_probability >= 0.7 or (salary_stopped and balance_change_90d < -0.5)')
    >>> stage_rule.matches(
    ...     {"churn_probability": 0.2, "salary_stopped": True, "balance_change_90d": -0.6})
    True
    """

    __slots__ = ("_names", "_paths", "_run", "_source")

    def __init__(
        self,
        source: str,
        names: frozenset[str],
        paths: tuple[tuple[str, str, tuple[_Key, ...]], ...],
        run: _Run,
    ) -> None:
        self._source = source
        self._names = names
        self._paths = paths
        self._run = run

    @property
    def source(self) -> str:
        """The text the expression was compiled from."""
        return self._source

    @property
    def names(self) -> frozenset[str]:
        """The variables the expression reads (function names are not variables).

        >>> sorted(compile_expression("max(recency_days, 0) > 30 and event.to == 'x'").names)
        ['event', 'recency_days']
        """
        return self._names

    @property
    def paths(self) -> tuple[str, ...]:
        """The values the expression reads, dotted through records, in source order.

        >>> compile_expression("event.payload.to == 'at_risk' or history[0] > 1").paths
        ('event.payload.to', 'history[0]')
        """
        return tuple(path for path, _, _ in self._paths)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The expression's value over ``variables``.

        Raises :class:`ExpressionError` (with the position) when a variable the expression
        reads is absent, or a value has the wrong type for what is done with it.
        """
        return self._run(variables)

    def matches(self, variables: Mapping[str, Any]) -> bool:
        """Whether the expression's value is true: the question a rule or trigger asks."""
        return bool(self._run(variables))

    def __repr__(self) -> str:
        return f"Expression({self._source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other._source == self._source

    def __hash__(self) -> int:
        return hash(self._source)

    def __reduce__(self) -> tuple[Callable[[str], Expression], tuple[str]]:
        return compile_expression, (self._source,)


def compile_expression(source: str, *, allowed_names: Collection[str] | None = None) -> Expression:
    """Check ``source`` against the language and compile it for evaluation.

    With ``allowed_names``, every variable must be one of them, so a typo in a rule file
    fails at load. A dotted entry such as ``"event.to"`` allows that field of a record; a
    plain ``"event"`` allows every field of it.

    >>> compile_expression("days_until_birthday <= 7").evaluate({"days_until_birthday": 3})
    True
    >>> compile_expression('event.too == "x"', allowed_names={"event.to", "event.from"})
    Traceback (most recent call last):
      ...
    shared.expr.ExpressionError: line 1, col 1: unknown name 'event.too' (did you mean \
'event.to'?); allowed names: event.from, event.to
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be text, not {type(source).__name__}")
    if isinstance(allowed_names, str):
        raise TypeError("allowed_names must be a collection of names, not one string")
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(
            f"expression is too long: {len(source)} characters (the limit is {MAX_SOURCE_LENGTH})",
            source=source,
        )
    body = source.strip()
    if not body:
        raise ExpressionError("expression is empty", source=source)
    # Leading space would be an indentation error; keep positions true to `source`.
    lead = source[: len(source) - len(source.lstrip())]
    shift = (lead.count("\n"), len(lead) - lead.rfind("\n") - 1)
    compiler = _Compiler(
        source, body, shift, None if allowed_names is None else frozenset(allowed_names)
    )
    tree = compiler.parse()
    parts = sum(1 for node in ast.walk(tree) if isinstance(node, ast.expr))
    if parts > MAX_NODES:
        raise ExpressionError(
            f"expression is too large: {parts} parts (the limit is {MAX_NODES}); "
            "split it into several rules",
            source=source,
        )
    run, _ = compiler.compile(tree.body, 1)
    compiler.paths.sort(key=lambda found: found[0])
    paths: dict[str, tuple[str, tuple[_Key, ...]]] = {}
    for _, path, root, keys in compiler.paths:
        paths.setdefault(path, (root, keys))
    return Expression(
        source,
        frozenset(root for root, _ in paths.values()),
        tuple((path, root, keys) for path, (root, keys) in paths.items()),
        run,
    )


def explain(expr: Expression | str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The values an expression reads, by path, as evidence for a decision.

    Never raises for missing or odd values: what cannot be read is reported as None.

    >>> explain("churn_probability >= 0.7 or event.payload.to == 'x'",
    ...         {"churn_probability": 0.82, "event": {"payload": {}}})
    {'churn_probability': 0.82, 'event.payload.to': None}
    """
    expression = expr if isinstance(expr, Expression) else compile_expression(expr)
    evidence: dict[str, Any] = {}
    for path, root, keys in expression._paths:
        value = variables.get(root)
        for key in keys:
            if value is None:
                break
            try:
                value = _member(value, key, is_attribute=False)
            except _EvalFailure:
                value = None
        evidence[path] = value
    return evidence


# --------------------------------------------------------------------------- compiling


class _EvalFailure(Exception):
    """Why a value could not be computed; the closure that catches it adds the position."""


_FORBIDDEN: Final[dict[type[ast.AST], str]] = {
    ast.Lambda: "lambda functions are not allowed",
    ast.ListComp: "list comprehensions are not allowed",
    ast.SetComp: "set comprehensions are not allowed",
    ast.DictComp: "dict comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-string fields are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.Await: "await expressions are not allowed",
    ast.Yield: "yield expressions are not allowed",
    ast.YieldFrom: "yield expressions are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: 'set literals are not allowed; use a tuple such as ("a", "b")',
    ast.Slice: "slices are not allowed",
}

_ARITHMETIC: Final[dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
}
_OTHER_OPERATORS: Final[dict[type[ast.operator], str]] = {
    ast.Pow: "**", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}  # fmt: skip
_COMPARISONS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}  # fmt: skip
_ORDERINGS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


def _constant(value: Any) -> _Run:
    return lambda _variables: value


def _immutable(value: Any) -> bool:
    """Whether a folded constant may be shared by every evaluation (a list may not)."""
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    return not isinstance(value, list)


class _Compiler:
    """One compilation: checks each node against the whitelist and builds its closure."""

    def __init__(self, source: str, body: str, shift: _Pos, allowed: frozenset[str] | None) -> None:
        self.source = source
        self.body = body
        self.shift = shift
        self.lines = [line.encode() for line in _LINE_BREAK.split(body)]
        self.allowed = allowed
        # (position, rendered path, root variable, keys below it)
        self.paths: list[tuple[_Pos, str, str, tuple[_Key, ...]]] = []
        self.handlers: dict[type[ast.AST], Callable[[Any, int], _Compiled]] = {
            ast.Constant: self.constant,
            ast.Name: self.reference,
            ast.Attribute: self.reference,
            ast.Subscript: self.reference,
            ast.BoolOp: self.bool_op,
            ast.UnaryOp: self.unary_op,
            ast.BinOp: self.bin_op,
            ast.Compare: self.compare,
            ast.IfExp: self.if_exp,
            ast.Tuple: self.sequence,
            ast.List: self.sequence,
            ast.Call: self.call,
        }

    # ---- positions and errors

    def error(self, where: _Pos | None, reason: str) -> ExpressionError:
        if where is None:
            return ExpressionError(reason, source=self.source)
        return ExpressionError(reason, where[0], where[1], self.source)

    def position(self, line: int, byte_col: int) -> _Pos:
        """ast counts columns in UTF-8 bytes of the parsed text; people count characters."""
        text = self.lines[line - 1] if 1 <= line <= len(self.lines) else b""
        col = len(text[:byte_col].decode("utf-8", "replace")) + 1
        if line == 1:
            col += self.shift[1]
        return line + self.shift[0], col

    def at(self, node: ast.expr) -> _Pos:
        return self.position(node.lineno, node.col_offset)

    def between(self, left: ast.expr, right: ast.expr, symbol: str) -> _Pos:
        """Where the operator written between two operands is (ast gives operators none)."""
        word = symbol.split()[0].encode()
        line, start = left.end_lineno, left.end_col_offset
        if line is not None and start is not None and 1 <= line <= len(self.lines):
            stop = right.col_offset if right.lineno == line else len(self.lines[line - 1])
            found = self.lines[line - 1].find(word, start, stop)
            if found >= 0:
                return self.position(line, found)
            if right.lineno != line:
                found = self.lines[right.lineno - 1].find(word, 0, right.col_offset)
                if found >= 0:
                    return self.position(right.lineno, found)
        return self.at(left)

    # ---- entry points

    def parse(self) -> ast.Expression:
        with warnings.catch_warnings():  # SyntaxWarnings would print: stay free of I/O
            warnings.simplefilter("ignore")
            try:
                return ast.parse(self.body, mode="eval")
            except SyntaxError as exc:
                reason = f"syntax error: {exc.msg}"
                if "\n" in self.body:
                    reason += " (to write a rule over several lines, wrap it in parentheses)"
                if exc.lineno is None or exc.offset is None:
                    raise self.error(None, reason) from None
                line, col = exc.lineno, max(exc.offset, 1)
                if line == 1:
                    col += self.shift[1]
                raise self.error((line + self.shift[0], col), reason) from None
            except (ValueError, RecursionError, MemoryError) as exc:
                raise self.error(None, f"cannot parse the expression: {exc}") from None

    def compile(self, node: ast.expr, depth: int) -> _Compiled:
        if depth > MAX_DEPTH:
            raise self.error(
                self.at(node), f"expression is nested too deeply (more than {MAX_DEPTH} levels)"
            )
        handler = self.handlers.get(type(node))
        if handler is None:
            reason = _FORBIDDEN.get(
                type(node), f"{type(node).__name__} expressions are not allowed"
            )
            raise self.error(self.at(node), reason)
        run, constant = handler(node, depth)
        if not constant or isinstance(node, ast.Constant):
            return run, constant
        # Work on constants once, now: a too-large "a" * 1000000000 fails at load.
        value = run(_NO_VARIABLES)
        return (_constant(value) if _immutable(value) else run), True

    # ---- leaves

    def constant(self, node: ast.Constant, depth: int) -> _Compiled:
        value = node.value
        if isinstance(value, bool | str | float) or value is None:
            return _constant(value), True
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise self.error(self.at(node), f"number too large (more than {MAX_INT_BITS} bits)")
            return _constant(value), True
        kind = {bytes: "bytes literals are", complex: "complex numbers are"}.get(
            type(value), "'...' is"
        )
        raise self.error(self.at(node), f"{kind} not allowed")

    def reference(self, node: ast.Name | ast.Attribute | ast.Subscript, depth: int) -> _Compiled:
        """A variable, a field of a record (``event.to``) or an item (``history[0]``)."""
        chain: list[ast.Attribute | ast.Subscript] = []
        base: ast.expr = node
        while isinstance(base, ast.Attribute | ast.Subscript):
            chain.append(base)
            base = base.value
        chain.reverse()
        if depth + len(chain) > MAX_DEPTH:
            raise self.error(
                self.at(node), f"expression is nested too deeply (more than {MAX_DEPTH} levels)"
            )
        if not isinstance(base, ast.Name):  # (a, b)[0], coalesce(x, y)[0]: items only
            base_run, constant = self.compile(base, depth + len(chain))
            steps = tuple(self.step(link, rooted=False) for link in chain)
            return _apply_steps(base_run, steps, self.error), constant
        root = self.variable_name(base)
        steps = tuple(self.step(link, rooted=True) for link in chain)
        keys = tuple(key for key, _, _ in steps)
        self.check_allowed(base, root, keys)
        self.paths.append((self.at(node), _render(root, keys), root, keys))
        return _lookup(root, self.at(base), steps, self.error), False

    def variable_name(self, node: ast.Name) -> str:
        if node.id.startswith("__"):
            raise self.error(self.at(node), f"names starting with '__' are not allowed: {node.id}")
        return node.id

    def step(self, link: ast.Attribute | ast.Subscript, *, rooted: bool) -> _Step:
        if isinstance(link, ast.Attribute):
            end = link.end_col_offset if link.end_col_offset is not None else link.col_offset
            where = self.position(link.end_lineno or link.lineno, end - len(link.attr.encode()))
            if link.attr.startswith("__"):
                raise self.error(where, f"names starting with '__' are not allowed: {link.attr}")
            if not rooted:
                raise self.error(
                    where,
                    "attribute access is only allowed on variables that hold records "
                    f"(such as event.to), not on {_describe(link.value)}: .{link.attr}",
                )
            return link.attr, True, where
        where = self.at(link.slice)
        if isinstance(link.slice, ast.Slice):
            raise self.error(where, _FORBIDDEN[ast.Slice])
        key = _constant_key(link.slice)
        if key is None:
            raise self.error(
                where, "subscripts need a constant key: a text in quotes or a whole number"
            )
        if isinstance(key, str) and key.startswith("__"):
            raise self.error(where, f"names starting with '__' are not allowed: {key}")
        return key, False, where

    def check_allowed(self, node: ast.Name, root: str, keys: tuple[_Key, ...]) -> None:
        if self.allowed is None:
            return
        prefixes = [root]
        for key in keys:
            if not isinstance(key, str):
                break
            prefixes.append(f"{prefixes[-1]}.{key}")
        if any(prefix in self.allowed for prefix in prefixes):
            return
        # Name the deepest part the allowed list knows about, or the variable itself.
        dotted = any(name.startswith(root + ".") for name in self.allowed)
        unknown = prefixes[min(1, len(prefixes) - 1)] if dotted else root
        guesses = difflib.get_close_matches(unknown, sorted(self.allowed), n=1)
        hint = f" (did you mean '{guesses[0]}'?)" if guesses else ""
        listed = sorted(self.allowed)
        shown = ", ".join(listed[:40]) + (", ..." if len(listed) > 40 else "")
        raise self.error(
            self.at(node), f"unknown name '{unknown}'{hint}; allowed names: {shown or '(none)'}"
        )

    # ---- operators

    def bool_op(self, node: ast.BoolOp, depth: int) -> _Compiled:
        parts = [self.compile(value, depth + 1) for value in node.values]
        runs = tuple(run for run, _ in parts)
        constant = all(constant for _, constant in parts)
        if isinstance(node.op, ast.And):

            def run_and(variables: Mapping[str, Any]) -> Any:
                value: Any = None
                for run in runs:
                    value = run(variables)
                    if not value:
                        return value
                return value

            return run_and, constant

        def run_or(variables: Mapping[str, Any]) -> Any:
            value: Any = None
            for run in runs:
                value = run(variables)
                if value:
                    return value
            return value

        return run_or, constant

    def unary_op(self, node: ast.UnaryOp, depth: int) -> _Compiled:
        where = self.at(node)
        if isinstance(node.op, ast.UAdd | ast.Invert):
            symbol = "+" if isinstance(node.op, ast.UAdd) else "~"
            raise self.error(where, f"the unary operator {symbol} is not allowed")
        operand, constant = self.compile(node.operand, depth + 1)
        if isinstance(node.op, ast.Not):
            return (lambda variables: not operand(variables)), constant
        error = self.error

        def negate(variables: Mapping[str, Any]) -> Any:
            value = operand(variables)
            if value is None:
                return None
            if not _is_number(value):
                raise error(where, f"unary - needs a number, not {_kind(value)}")
            return -value

        return negate, constant

    def bin_op(self, node: ast.BinOp, depth: int) -> _Compiled:
        left, left_constant = self.compile(node.left, depth + 1)
        known = _ARITHMETIC.get(type(node.op))
        if known is None:
            symbol = _OTHER_OPERATORS.get(type(node.op), type(node.op).__name__)
            where = self.between(node.left, node.right, symbol)
            if isinstance(node.op, ast.Pow):
                raise self.error(where, "the power operator ** is not allowed")
            raise self.error(where, f"the operator {symbol} is not allowed")
        symbol, function = known
        where = self.between(node.left, node.right, symbol)
        right, right_constant = self.compile(node.right, depth + 1)
        error = self.error

        def run(variables: Mapping[str, Any]) -> Any:
            a = left(variables)
            b = right(variables)
            try:
                return _arithmetic(symbol, function, a, b)
            except _EvalFailure as failure:
                raise error(where, str(failure)) from None

        return run, left_constant and right_constant

    def compare(self, node: ast.Compare, depth: int) -> _Compiled:
        first, constant = self.compile(node.left, depth + 1)
        links: list[tuple[str, _Run, _Pos]] = []
        previous = node.left
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            symbol = _COMPARISONS[type(op)]
            where = self.between(previous, comparator, symbol)
            if isinstance(op, ast.Is | ast.IsNot):
                raise self.error(
                    where, f"'{symbol}' comparisons are not allowed; use == None or != None"
                )
            run, comparator_constant = self.compile(comparator, depth + 1)
            links.append((symbol, run, where))
            constant = constant and comparator_constant
            previous = comparator
        chain = tuple(links)
        error = self.error

        def run_compare(variables: Mapping[str, Any]) -> bool:
            left = first(variables)
            for symbol, run, where in chain:
                right = run(variables)
                try:
                    holds = _compare(symbol, left, right)
                except _EvalFailure as failure:
                    raise error(where, str(failure)) from None
                if not holds:
                    return False
                left = right
            return True

        return run_compare, constant

    def if_exp(self, node: ast.IfExp, depth: int) -> _Compiled:
        body, body_constant = self.compile(node.body, depth + 1)
        test, test_constant = self.compile(node.test, depth + 1)
        orelse, orelse_constant = self.compile(node.orelse, depth + 1)

        def run(variables: Mapping[str, Any]) -> Any:
            return body(variables) if test(variables) else orelse(variables)

        return run, body_constant and test_constant and orelse_constant

    def sequence(self, node: ast.Tuple | ast.List, depth: int) -> _Compiled:
        parts = [self.compile(element, depth + 1) for element in node.elts]
        runs = tuple(run for run, _ in parts)
        constant = all(constant for _, constant in parts)
        if isinstance(node, ast.Tuple):
            return (lambda variables: tuple(run(variables) for run in runs)), constant
        return (lambda variables: [run(variables) for run in runs]), constant

    def call(self, node: ast.Call, depth: int) -> _Compiled:
        if not isinstance(node.func, ast.Name):
            self.compile(node.func, depth + 1)  # name what is wrong in the callee first
            raise self.error(
                self.at(node.func),
                f"only the functions {', '.join(FUNCTIONS)} can be called, "
                f"not {_describe(node.func)}",
            )
        name = node.func.id
        where = self.at(node.func)
        if name not in _FUNCTION_TABLE:
            raise self.error(
                where,
                f"function calls other than {', '.join(FUNCTIONS)} are not allowed: {name}",
            )
        if node.keywords:
            raise self.error(
                self.at(node.keywords[0].value), f"keyword arguments are not allowed in {name}()"
            )
        fewest, most, function = _FUNCTION_TABLE[name]
        parts = [self.compile(argument, depth + 1) for argument in node.args]
        if len(parts) < fewest or (most is not None and len(parts) > most):
            wanted = (
                f"at least {fewest}" if most is None
                else str(fewest) if fewest == most
                else f"{fewest} or {most}"
            )  # fmt: skip
            raise self.error(where, f"{name}() takes {wanted} argument(s), got {len(parts)}")
        runs = tuple(run for run, _ in parts)
        constant = all(constant for _, constant in parts)
        error = self.error
        if function is None:  # coalesce: stop at the first known value

            def run_coalesce(variables: Mapping[str, Any]) -> Any:
                for run in runs:
                    value = run(variables)
                    if value is not None:
                        return value
                return None

            return run_coalesce, constant

        def run_call(variables: Mapping[str, Any]) -> Any:
            arguments = [run(variables) for run in runs]
            try:
                return function(*arguments)
            except _EvalFailure as failure:
                raise error(where, f"{name}(): {failure}") from None

        return run_call, constant


def _constant_key(node: ast.expr) -> _Key | None:
    """The key of ``x["name"]``, ``x[0]`` or ``x[-1]``; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
        value: str | int = node.value
        return None if isinstance(value, bool) else value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    return None


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        return "the result of a call"
    if isinstance(node, ast.Constant | ast.Tuple | ast.List):
        return "a literal value"
    if isinstance(node, ast.Attribute):
        return f"a method (.{node.attr})"
    return "an expression"


def _render(root: str, keys: tuple[_Key, ...]) -> str:
    """``event.payload.to``, ``history[0]``, ``limits["credit-card"]``."""
    parts = [root]
    for key in keys:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _IDENTIFIER.match(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key, ensure_ascii=False)}]")
    return "".join(parts)


# --------------------------------------------------------------------------- evaluating

_ErrorFactory = Callable[[_Pos | None, str], ExpressionError]


def _lookup(root: str, where: _Pos, steps: tuple[_Step, ...], error: _ErrorFactory) -> _Run:
    def run(variables: Mapping[str, Any]) -> Any:
        try:
            value = variables[root]
        except KeyError:
            raise error(where, _missing(root, variables)) from None
        for key, is_attribute, step_where in steps:
            if value is None:
                return None
            try:
                value = _member(value, key, is_attribute=is_attribute)
            except _EvalFailure as failure:
                raise error(step_where, str(failure)) from None
        return value

    return run


def _apply_steps(base: _Run, steps: tuple[_Step, ...], error: _ErrorFactory) -> _Run:
    def run(variables: Mapping[str, Any]) -> Any:
        value = base(variables)
        for key, is_attribute, where in steps:
            if value is None:
                return None
            try:
                value = _member(value, key, is_attribute=is_attribute)
            except _EvalFailure as failure:
                raise error(where, str(failure)) from None
        return value

    return run


def _missing(root: str, variables: Mapping[str, Any]) -> str:
    given = sorted(str(name) for name in variables)
    guesses = difflib.get_close_matches(root, given, n=1)
    hint = f" (did you mean '{guesses[0]}'?)" if guesses else ""
    shown = ", ".join(given[:40]) + (", ..." if len(given) > 40 else "")
    return f"no value was given for variable '{root}'{hint}; given: {shown or '(none)'}"


def _member(value: Any, key: _Key, *, is_attribute: bool) -> Any:
    """A field of a record or an item of a list; what is absent reads as None."""
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, types.SimpleNamespace) and isinstance(key, str):
        return vars(value).get(key)
    if is_attribute:
        raise _EvalFailure(f"attribute access needs a record (a dict), not {_kind(value)}: .{key}")
    if isinstance(value, list | tuple):
        if not isinstance(key, int):
            raise _EvalFailure(f"a {_kind(value)} is indexed by position, not by {key!r}")
        try:
            return value[key]
        except IndexError:
            return None
    raise _EvalFailure(f"only records (dicts) and lists can be subscripted, not {_kind(value)}")


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal | numbers.Real)


def _checked_number(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _EvalFailure(f"number too large (more than {MAX_INT_BITS} bits)")
    return value


def _checked_length(length: int) -> None:
    if length > MAX_SEQUENCE_LENGTH:
        raise _EvalFailure(f"result too long: {length} items (the limit is {MAX_SEQUENCE_LENGTH})")


def _arithmetic(symbol: str, function: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _is_number(a) and _is_number(b):
        if symbol in ("/", "//", "%") and b == 0:
            return None
        try:
            return _checked_number(function(a, b))
        except ZeroDivisionError:  # e.g. Decimal 0/0 with a zero that is not == 0
            return None
        except TypeError:  # Decimal with float, say
            raise _EvalFailure(f"cannot combine {_kind(a)} and {_kind(b)} with {symbol}") from None
        except (ValueError, ArithmeticError) as exc:
            raise _EvalFailure(f"cannot compute {_kind(a)} {symbol} {_kind(b)}: {exc}") from None
    if symbol == "+" and type(a) is type(b) and isinstance(a, str | list | tuple):
        _checked_length(len(a) + len(b))
        return a + b
    if symbol == "*":
        sequence, count = (a, b) if isinstance(b, int) else (b, a)
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            _checked_length(len(sequence) * max(count, 0))
            return sequence * count
    raise _EvalFailure(f"unsupported operand types for {symbol}: {_kind(a)} and {_kind(b)}")


def _compare(symbol: str, a: Any, b: Any) -> bool:
    if symbol == "==":
        return bool(a == b)
    if symbol == "!=":
        return bool(a != b)
    if a is None or b is None:
        return False
    if symbol in ("in", "not in"):
        return _contains(b, a) == (symbol == "in")
    try:
        return bool(_ORDERINGS[symbol](a, b))
    except TypeError:
        raise _EvalFailure(f"cannot compare {_kind(a)} and {_kind(b)} with {symbol}") from None


def _contains(collection: Any, item: Any) -> bool:
    if isinstance(collection, str):
        if not isinstance(item, str):
            raise _EvalFailure(f"'in' on text needs text on the left, not {_kind(item)}")
        return item in collection
    if not isinstance(collection, Collection):
        raise _EvalFailure(f"'in' needs a collection on the right, not {_kind(collection)}")
    try:
        return item in collection
    except TypeError:
        raise _EvalFailure(f"cannot look for {_kind(item)} in {_kind(collection)}") from None


# --------------------------------------------------------------------------- functions


def _values(arguments: Sequence[Any]) -> list[Any]:
    """min(a, b, ...) or min(collection), without the unknown values."""
    if len(arguments) == 1 and isinstance(arguments[0], list | tuple | set | frozenset):
        arguments = list(arguments[0])
    return [value for value in arguments if value is not None]


def _min(*arguments: Any) -> Any:
    values = _values(arguments)
    try:
        return min(values) if values else None
    except TypeError:
        raise _EvalFailure(f"cannot compare {', '.join(_kind(v) for v in values)}") from None


def _max(*arguments: Any) -> Any:
    values = _values(arguments)
    try:
        return max(values) if values else None
    except TypeError:
        raise _EvalFailure(f"cannot compare {', '.join(_kind(v) for v in values)}") from None


def _abs(value: Any) -> Any:
    if value is None:
        return None
    if not _is_number(value):
        raise _EvalFailure(f"needs a number, not {_kind(value)}")
    return abs(value)


def _round(value: Any, ndigits: Any = None) -> Any:
    if value is None:
        return None
    if not _is_number(value):
        raise _EvalFailure(f"needs a number, not {_kind(value)}")
    if ndigits is None:
        try:
            return _checked_number(round(value))
        except (ValueError, OverflowError) as exc:  # nan, inf
            raise _EvalFailure(str(exc)) from None
    if type(ndigits) is not int or abs(ndigits) > MAX_ROUND_DIGITS:
        raise _EvalFailure(
            f"digits must be a whole number from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}"
        )
    return round(value, ndigits)


def _len(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str | Collection):
        raise _EvalFailure(f"needs text or a collection, not {_kind(value)}")
    return len(value)


def _lower(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _EvalFailure(f"needs text, not {_kind(value)}")
    return value.lower()


def _contains_function(collection: Any, item: Any) -> bool:
    return _compare("in", item, collection)


def _moment(value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise _EvalFailure(f"not an ISO 8601 date or datetime: {value!r}") from None
    raise _EvalFailure(f"needs dates or datetimes, not {_kind(value)}")


def _days_between(start: Any, end: Any) -> Any:
    if start is None or end is None:
        return None
    first, last = _moment(start), _moment(end)
    if isinstance(first, datetime) != isinstance(last, datetime):
        raise _EvalFailure("needs two datetimes or two dates, not one of each")
    try:
        delta = last - first
    except TypeError:
        raise _EvalFailure("cannot mix datetimes with and without a time zone") from None
    if isinstance(first, datetime):
        return delta / timedelta(days=1)
    return delta.days


# name -> (fewest arguments, most arguments or None, function or None for lazy coalesce)
_FUNCTION_TABLE: Final[dict[str, tuple[int, int | None, Callable[..., Any] | None]]] = {
    "min": (1, None, _min),
    "max": (1, None, _max),
    "abs": (1, 1, _abs),
    "round": (1, 2, _round),
    "len": (1, 1, _len),
    "coalesce": (1, None, None),
    "days_between": (2, 2, _days_between),
    "lower": (1, 1, _lower),
    "contains": (2, 2, _contains_function),
}
