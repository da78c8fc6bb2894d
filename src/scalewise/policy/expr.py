"""Conditions over a measurement's ``result``: a small, safe expression language.

The syntax is the subset of expr-lang (what Argo Rollouts evaluates ``successCondition`` and
``failureCondition`` with) that analysis conditions use; nothing is passed to Python's ``eval``. The
grammar is parsed by Lark (LALR), and the tree is interpreted here over four value types only:
numbers, booleans, lists of numbers and ``nil``. There are no attributes, no assignments, no loops
and no calls other than the functions listed below, so a condition cannot reach anything but
``result``.

``result`` is what the query returned: a number for a PromQL scalar, a list of numbers (one per
series, in answer order) for an instant vector, so ``result[0] < 0.05`` reads the first series.

* literals: ``0.05``, ``1e3``, ``true``, ``false``, ``nil``;
* ``result``, indexing ``result[0]`` (negative indexes count from the end), ``#`` inside a predicate;
* arithmetic ``+ - * / %``, unary ``-``; comparisons ``< <= > >= == !=`` (not chained);
* ``&&`` / ``and``, ``||`` / ``or``, ``!`` / ``not`` (short-circuit), parentheses;
* ``cond ? a : b``;
* functions: ``len(x)``, ``abs(x)``, ``min(...)``, ``max(...)``, ``sum(list)``, ``isNaN(x)``, ``isInf(x)``,
  ``isNil(x)``, ``default(x, fallback)`` (``fallback`` when ``x`` is nil or an empty list),
  ``asFloat(x)``, and the predicates ``all(list, {# < 0.05})``, ``any(list, {...})``, ``none(list, {...})``.

Evaluation errors (an index past the end, as for an empty vector; a type mismatch; division by
zero) raise :class:`ExprError`; the analysis turns them into a measurement in phase ``Error``,
as Argo Rollouts does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedEOF, UnexpectedInput, UnexpectedToken

Value = float | bool | list[float] | None

GRAMMAR = r"""
?start: ternary

?ternary: or_expr
        | or_expr "?" ternary ":" ternary   -> cond

?or_expr: and_expr
        | or_expr OR and_expr               -> or_
?and_expr: not_expr
        | and_expr AND not_expr             -> and_
?not_expr: comparison
        | NOT not_expr                      -> not_

?comparison: sum
        | sum COMP_OP sum                   -> compare

?sum: product
    | sum ADD_OP product                    -> arith
?product: unary
    | product MUL_OP unary                  -> arith
?unary: postfix
    | "-" unary                             -> neg
    | "+" unary

?postfix: atom
    | postfix "[" ternary "]"               -> index

?atom: NUMBER                               -> number
     | "true"                               -> true
     | "false"                              -> false
     | "nil"                                -> nil
     | "result"                             -> result
     | "#"                                  -> element
     | NAME "(" [arg ("," arg)*] ")"        -> call
     | "(" ternary ")"

?arg: ternary
    | "{" ternary "}"                       -> predicate

OR: "||" | "or"
AND: "&&" | "and"
NOT: "!" | "not"
COMP_OP: "<=" | ">=" | "==" | "!=" | "<" | ">"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/" | "%"
NAME: /(?!(and|or|not|true|false|nil|result)\b)[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/

%import common.WS
%ignore WS
"""

#: name -> (min args, max args or None, takes a predicate as its second argument)
FUNCTIONS: dict[str, tuple[int, int | None, bool]] = {
    "len": (1, 1, False),
    "abs": (1, 1, False),
    "min": (1, None, False),
    "max": (1, None, False),
    "sum": (1, 1, False),
    "isNaN": (1, 1, False),
    "isInf": (1, 1, False),
    "isNil": (1, 1, False),
    "default": (2, 2, False),
    "asFloat": (1, 1, False),
    "all": (2, 2, True),
    "any": (2, 2, True),
    "none": (2, 2, True),
}
MAX_LENGTH = 1000
MAX_DEPTH = 64


class ExprError(ValueError):
    """A condition that does not parse, or that cannot be evaluated on this result."""


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


@lru_cache(maxsize=256)
def parse(text: str) -> Tree[Token]:
    """Parse and check a condition (known functions, argument counts, ``#`` only inside a predicate).
    Raises ExprError saying what is wrong and where."""
    if not text.strip():
        raise ExprError("empty condition")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = _parser().parse(text)
    except (UnexpectedEOF, UnexpectedToken) as exc:
        if isinstance(exc, UnexpectedEOF) or exc.token.type == "$END":
            raise ExprError(f"syntax error: {text!r} ends too early") from None
        raise ExprError(f"syntax error at column {exc.column}: {text!r}") from None
    except UnexpectedInput as exc:
        raise ExprError(f"syntax error at column {exc.column}: {text!r}") from None
    except LarkError as exc:  # pragma: no cover - any other parser failure
        raise ExprError(f"cannot parse {text!r}: {exc}") from None
    if _depth(tree) > MAX_DEPTH:
        raise ExprError(f"nested more than {MAX_DEPTH} levels deep")
    _check(tree, in_predicate=False)
    return tree


def _depth(tree: Tree[Token]) -> int:
    """Nesting depth, without recursion (the checks and the interpreter recurse once per level)."""
    deepest = 0
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, Tree):
            stack.extend((child, depth + 1) for child in node.children if child is not None)
    return deepest


def _check(node: Tree[Token] | Token, in_predicate: bool) -> None:
    if isinstance(node, Token):
        return
    if node.data == "element" and not in_predicate:
        raise ExprError("'#' is only meaningful inside a predicate such as all(result, {# < 1})")
    if node.data == "call":
        name = str(node.children[0])
        args = [c for c in node.children[1:] if c is not None]
        if name not in FUNCTIONS:
            raise ExprError(f"unknown function {name}() (known: {', '.join(sorted(FUNCTIONS))})")
        low, high, takes_predicate = FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if low == high else f"{low}+" if high is None else f"{low}-{high}"
            raise ExprError(f"{name}() takes {want} argument(s), got {len(args)}")
        for i, arg in enumerate(args):
            is_pred = isinstance(arg, Tree) and arg.data == "predicate"
            if takes_predicate and i == 1:
                if not is_pred:
                    raise ExprError(f"{name}()'s second argument is a predicate in braces, e.g. {{# < 1}}")
                _check(arg.children[0], in_predicate=True)  # type: ignore[union-attr]  # is_pred: a Tree
                continue
            if is_pred:
                raise ExprError(f"{name}() takes no predicate")
            _check(arg, in_predicate)
        return
    if node.data == "predicate":
        raise ExprError("a predicate in braces is only an argument of all(), any() or none()")
    for child in node.children:
        if child is not None:
            _check(child, in_predicate)


def evaluate(text: str, result: Value) -> Value:
    """The value of the condition for this ``result``; raises ExprError."""
    return _Eval(result).run(parse(text))


def evaluate_condition(text: str, result: Value) -> bool:
    value = evaluate(text, result)
    if not isinstance(value, bool):
        raise ExprError(f"the condition gave {_show(value)}, not true or false")
    return value


def _show(value: Value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _num(value: Value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"{what} needs a number, got {_show(value)}")
    return float(value)


def _list(value: Value, what: str) -> list[float]:
    if not isinstance(value, list):
        raise ExprError(f"{what} needs a list, got {_show(value)}")
    return value


def _bool(value: Value, what: str) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"{what} needs true or false, got {_show(value)}")
    return value


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class _Eval:
    def __init__(self, result: Value, element: Value = None) -> None:
        self.result = result
        self.element = element

    def run(self, node: Tree[Token] | Token) -> Value:
        if isinstance(node, Token):  # pragma: no cover - the grammar wraps every token
            raise ExprError(f"unexpected token {node!r}")
        kind = node.data
        ch = node.children
        if kind == "number":
            return float(str(ch[0]))
        if kind == "true":
            return True
        if kind == "false":
            return False
        if kind == "nil":
            return None
        if kind == "result":
            return self.result
        if kind == "element":
            return self.element
        if kind == "neg":
            return -_num(self.run(ch[0]), "'-'")
        if kind == "or_":
            return _bool(self.run(ch[0]), "'||'") or _bool(self.run(ch[2]), "'||'")
        if kind == "and_":
            return _bool(self.run(ch[0]), "'&&'") and _bool(self.run(ch[2]), "'&&'")
        if kind == "not_":
            return not _bool(self.run(ch[1]), "'!'")
        if kind == "cond":
            return self.run(ch[1]) if _bool(self.run(ch[0]), "'?:'") else self.run(ch[2])
        if kind == "compare":
            return self._compare(self.run(ch[0]), str(ch[1]), self.run(ch[2]))
        if kind == "arith":
            return self._arith(self.run(ch[0]), str(ch[1]), self.run(ch[2]))
        if kind == "index":
            return self._index(self.run(ch[0]), self.run(ch[1]))
        if kind == "call":
            return self._call(str(ch[0]), [c for c in ch[1:] if c is not None])
        raise ExprError(f"unsupported expression {kind!r}")  # pragma: no cover - parse() refuses it

    @staticmethod
    def _compare(left: Value, op: str, right: Value) -> bool:
        if op in ("==", "!="):
            equal = isinstance(left, bool) == isinstance(right, bool) and left == right
            return equal if op == "==" else not equal
        return _COMPARE[op](_num(left, f"'{op}'"), _num(right, f"'{op}'"))

    @staticmethod
    def _arith(left: Value, op: str, right: Value) -> float:
        a, b = _num(left, f"'{op}'"), _num(right, f"'{op}'")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            raise ExprError(f"division by zero in '{op}'")
        return a / b if op == "/" else math.fmod(a, b)

    @staticmethod
    def _index(value: Value, index: Value) -> float:
        items = _list(value, "'[]'")
        i = _num(index, "an index")
        if i != int(i):
            raise ExprError(f"index {i:g} is not a whole number")
        n = int(i)
        if not -len(items) <= n < len(items):
            if not items:
                raise ExprError(f"index {n} out of range: the result is empty (the query returned no data)")
            raise ExprError(f"index {n} out of range: the result has {len(items)} value(s)")
        return items[n]

    def _call(self, name: str, args: list[Tree[Token] | Token]) -> Value:
        if FUNCTIONS[name][2]:
            items = _list(self.run(args[0]), f"{name}()")
            body = args[1].children[0]  # type: ignore[union-attr]  # parse() checked it is a predicate
            verdicts = [_bool(_Eval(self.result, item).run(body), f"{name}()'s predicate") for item in items]
            if name == "all":
                return all(verdicts)
            if name == "any":
                return any(verdicts)
            return not any(verdicts)
        values = [self.run(a) for a in args]
        if name == "len":
            return float(len(_list(values[0], "len()")))
        if name == "abs":
            return abs(_num(values[0], "abs()"))
        if name in ("min", "max"):
            numbers = (
                _list(values[0], f"{name}()") if len(values) == 1 else [_num(v, f"{name}()") for v in values]
            )
            if not numbers:
                raise ExprError(f"{name}() of an empty list")
            return float(min(numbers) if name == "min" else max(numbers))
        if name == "sum":
            return math.fsum(_list(values[0], "sum()"))
        if name == "isNaN":
            return math.isnan(_num(values[0], "isNaN()"))
        if name == "isInf":
            return math.isinf(_num(values[0], "isInf()"))
        if name == "isNil":
            return values[0] is None or values[0] == []
        if name == "default":
            return values[1] if values[0] is None or values[0] == [] else values[0]
        if name == "asFloat":
            return _num(values[0], "asFloat()")
        raise ExprError(f"unknown function {name}()")  # pragma: no cover - parse() refuses it


def check(text: str) -> str:
    """For validators: the condition if it parses, else ValueError with the reason."""
    parse(text)
    return text


__all__ = ["FUNCTIONS", "ExprError", "Value", "check", "evaluate", "evaluate_condition", "parse"]
