"""The policy's rounding: ratios and replica counts compared after rounding to 9 decimals.

``round(x, 9)`` guards float noise (``3.0000000000000004`` must give 3 replicas, 1.1 must be within a
tolerance of 0.1 of 1), but it is a correctly rounded decimal conversion and costs more than the rest
of a comparison. :func:`ceil_rounded` and :class:`Band` skip it wherever it cannot change the result:

``round(., 9)`` is monotone (non-decreasing) and moves a number of magnitude below 2**20 by at most
``5e-10`` plus half an ulp (``1.2e-10``), far less than :data:`NEAR`. So a value more than ``NEAR``
away from every boundary it is compared with (an integer for the ceiling, a band's ends for the
tolerance) compares the same before and after rounding; only values within ``NEAR`` of a boundary are
rounded, and the results are the exact ones in every case (a property test compares them with the
plain formulas).
"""

from __future__ import annotations

import math

#: Values within this distance of a boundary are rounded before the comparison.
NEAR = 1e-6
#: Beyond this magnitude the exact path is always taken.
_LIMIT = float(2**20)


def ceil_rounded(x: float) -> int:
    """``math.ceil(round(x, 9))``, computed without the rounding when it cannot matter."""
    c = math.ceil(x)  # raises for NaN and infinities, as ``math.ceil(round(x, 9))`` does
    if c - x > NEAR and x - (c - 1) > NEAR and -_LIMIT < x < _LIMIT:
        return c
    return math.ceil(round(x, 9))


class Band:
    """``low <= round(x, 9) <= high`` for fixed ``low`` and ``high`` (already rounded to 9 decimals)."""

    __slots__ = ("_inside", "_outside", "high", "low")

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high
        # (a, b): a < x < b is inside for sure; x < a or x > b outside for sure (else: round and compare).
        inside = (low + NEAR, high - NEAR)
        outside = (low - NEAR, high + NEAR)
        exact = (  # the margins survive the rounding (true for any band of moderate numbers); with
            # monotony, every x beyond a margin then compares like the margin itself
            round(inside[0], 9) > low
            and round(inside[1], 9) < high
            and round(outside[0], 9) < low
            and round(outside[1], 9) > high
        )
        # Without safe margins every value takes the exact path: nothing is inside or outside for sure.
        self._inside = inside if exact else (math.inf, -math.inf)
        self._outside = outside if exact else (-math.inf, math.inf)

    def __contains__(self, x: float) -> bool:
        inside = self._inside
        if inside[0] < x < inside[1]:
            return True
        outside = self._outside
        if x < outside[0] or x > outside[1]:
            return False
        r = round(x, 9)
        return self.low <= r <= self.high
