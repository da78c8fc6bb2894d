"""The analysis condition language: expr-lang's syntax for what Argo Rollouts' conditions use, parsed
by Lark and interpreted without eval; anything else is refused with the reason."""

from __future__ import annotations

import contextlib
import math
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalewise.policy.expr import ExprError, evaluate, evaluate_condition, parse


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        ("result[0] < 0.05", [0.01], True),
        ("result[0] < 0.05", [0.2, 0.01], False),
        ("result[-1] >= 0.95", [0.1, 0.96], True),
        ("result < 0.05 && result >= 0", 0.01, True),
        ("result > 1 and result < 3 or false", 2.0, True),
        ("!(result > 1)", 2.0, False),
        ("not result", False, True),
        ("len(result) == 0 || result[0] >= 0.95", [], True),
        ("default(result, 0) == 0", [], True),
        ("default(result, 0) == 3", 3.0, True),
        ("isNil(result)", None, True),
        ("result == nil", None, True),
        ("isNaN(result[0])", [math.nan], True),
        ("isInf(result)", -math.inf, True),
        ("all(result, {# < 0.05})", [0.01, 0.02], True),
        ("all(result, {# < 0.05})", [], True),
        ("any(result, {# > 1 && # < 3})", [0.5, 2.0], True),
        ("none(result, {# > 0.1})", [0.05, 0.2], False),
        ("sum(result) / len(result) < 0.1", [0.05, 0.1], True),
        ("min(result) > 0 && max(1, 2, 3) == 3", [1.0], True),
        ("abs(-result) == 2", 2.0, True),
        ("result > 1 ? result < 5 : false", 3.0, True),
        ("-result + 2 * 3 % 4 == 1", 1.0, True),
        ("1e-3 < result", 0.01, True),
        ("asFloat(result) == .5", 0.5, True),
        ("true == 1", None, False),  # no coercion between booleans and numbers
    ],
)
def test_conditions(text: str, result: object, expected: bool) -> None:
    assert evaluate_condition(text, result) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty condition"),
        ("result[0] <", "syntax error"),
        ('__import__("os").system("true")', "syntax error"),
        ("result.__class__", "syntax error"),
        ("open(result)", "unknown function open()"),
        ("eval(1)", "unknown function eval()"),
        ("x < 1", "syntax error"),
        ("1 < result < 3", "syntax error"),
        ("# < 1", "only meaningful inside a predicate"),
        ("all(result, # < 1)", "predicate in braces"),
        ("len(result, 1)", "len() takes 1 argument(s), got 2"),
        ("len({# < 1})", "takes no predicate"),
        ("result = 1", "syntax error"),
        ("x" * 1001, "longer than 1000"),
        ("!" * 900 + "true", "nested more than 64 levels deep"),
        ("abs(" * 70 + "1" + ")" * 70 + " < 2", "nested more than 64 levels deep"),
    ],
)
def test_refused_at_parse_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ExprError, match=None) as info:
        parse(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("text", "result", "reason"),
    [
        ("result[0] < 1", [], "the result is empty (the query returned no data)"),
        ("result[3] < 1", [1.0], "out of range: the result has 1 value(s)"),
        ("result[0.5] < 1", [1.0], "not a whole number"),
        ("result < 1", [1.0], "needs a number"),
        ("result[0] < 1", 1.0, "needs a list"),
        ("result / 0 > 1", 1.0, "division by zero"),
        ("result", 1.0, "not true or false"),
        ("result && true", 1.0, "needs true or false"),
        ("min(result) < 1", [], "empty list"),
        ("all(result, {#})", [1.0], "predicate needs true or false"),
    ],
)
def test_evaluation_errors_name_the_reason(text: str, result: object, reason: str) -> None:
    with pytest.raises(ExprError) as info:
        evaluate_condition(text, result)  # type: ignore[arg-type]
    assert reason in str(info.value)


# -- properties ------------------------------------------------------------------------------------

numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 3))
ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
           "!=": operator.ne}


@st.composite
def arithmetic(draw: st.DrawFn, depth: int = 3) -> tuple[str, float]:
    """An arithmetic expression over literals and result[i], with its value computed in Python."""
    if depth == 0 or draw(st.booleans()):
        if draw(st.booleans()):
            x = draw(numbers)
            return (f"({x!r})" if x < 0 else repr(x)), x
        i = draw(st.integers(0, 2))
        return f"result[{i}]", VECTOR[i]
    left, lv = draw(arithmetic(depth - 1))
    right, rv = draw(arithmetic(depth - 1))
    op = draw(st.sampled_from(sorted(ARITH)))
    return f"({left} {op} {right})", ARITH[op](lv, rv)


VECTOR = [0.25, -3.0, 100.0]


@settings(max_examples=200, deadline=None)
@given(arithmetic(), arithmetic(), st.sampled_from(sorted(COMPARE)), st.booleans())
def test_comparisons_agree_with_python(
    left: tuple[str, float], right: tuple[str, float], op: str, negate: bool
) -> None:
    text = f"{left[0]} {op} {right[0]}"
    expected = COMPARE[op](left[1], right[1])
    if negate:
        text, expected = f"!({text})", not expected
    assert evaluate_condition(text, list(VECTOR)) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("result[]0123456789.<>=!&|() #{},-+*/%?:andorlenallx_")), max_size=40),
       st.one_of(st.none(), numbers, st.lists(numbers, max_size=3)))
def test_any_text_parses_or_is_refused_never_crashes(text: str, result: object) -> None:
    with contextlib.suppress(ExprError):
        evaluate(text, result)  # type: ignore[arg-type]
