"""``policy.rounding``: the shortcuts give exactly ``ceil(round(x, 9))`` and ``low <= round(x, 9) <= high``."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scalewise.policy.calculator import within
from scalewise.policy.rounding import NEAR, Band, ceil_rounded

#: Numbers close to the boundaries, where the rounding decides: an integer or a band end, plus a few ulps
#: or a few multiples of 1e-10 .. NEAR either way.
_OFFSETS = st.one_of(
    st.integers(-8, 8).map(lambda k: k * 1e-16),
    st.integers(-20, 20).map(lambda k: k * 1e-10),
    st.sampled_from([NEAR, -NEAR, 2 * NEAR, -2 * NEAR, NEAR / 2, -NEAR / 2, 5e-10, -5e-10]),
    st.floats(-3 * NEAR, 3 * NEAR),
)
_ANY = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
_NEAR_INTEGERS = st.builds(lambda k, d: k + d, st.integers(-2_000_000, 2_000_000), _OFFSETS)
_NEAR_RATIOS = st.builds(lambda base, d: base + d, st.sampled_from([0.0, 0.1, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5]), _OFFSETS)


@given(st.one_of(_ANY, _NEAR_INTEGERS))
@example(3.0000000000000004)
@example(2.9999999999)
@example(1e-10)
@example(-0.0)
@example(float(2**20) + 0.5)
def test_ceil_rounded_is_ceil_of_the_rounded_value(x: float) -> None:
    assert ceil_rounded(x) == math.ceil(round(x, 9))


@pytest.mark.parametrize(
    ("x", "error"), [(math.nan, ValueError), (math.inf, OverflowError), (-math.inf, OverflowError)]
)
def test_ceil_rounded_refuses_what_ceil_refuses(x: float, error: type[Exception]) -> None:
    with pytest.raises(error):
        math.ceil(round(x, 9))
    with pytest.raises(error):
        ceil_rounded(x)


@given(
    st.one_of(_ANY, _NEAR_RATIOS),
    st.sampled_from([0.0, 0.05, 0.1, 0.2, 1e-9, 0.3]),
    st.sampled_from([0.0, 0.05, 0.1, 0.2, 1e-9, 0.5]),
)
@example(1.1, 0.1, 0.1)
@example(0.9, 0.1, 0.1)
@example(1.1000000000000003, 0.1, 0.1)
@example(0.8999999999999999, 0.1, 0.1)
def test_band_is_the_rounded_comparison(x: float, up: float, down: float) -> None:
    low, high = round(1.0 - down, 9), round(1.0 + up, 9)
    expected = low <= round(x, 9) <= high
    assert (x in Band(low, high)) == expected
    assert within(x, (up, down)) == expected
    if up == down:
        assert within(x, up) == expected


def test_band_without_safe_margins_compares_exactly() -> None:
    huge = Band(1e300, 1e300)  # the margins vanish in the rounding: every value takes the exact path
    assert 1e300 in huge and 1.0 not in huge and math.nan not in huge
    assert math.nan not in Band(0.9, 1.1)

