"""decide() as a fold over named steps: the reason codes are a pinned contract; no long functions."""

from __future__ import annotations

import ast
from pathlib import Path

from scalewise.policy import decide as decide_module
from scalewise.policy.decide import REASONS, STEPS, Reason

#: The reason codes as shipped. Events, metrics and automations match on these strings: a value may
#: be added here, never changed or removed.
PINNED_REASONS = {
    "PAUSED": "paused",
    "WITHIN_TOLERANCE": "within_tolerance",
    "DIRECTION_FLIP": "direction_flip",
    "SCALE_UP": "scale_up",
    "SCALE_DOWN": "scale_down",
    "STABILIZED_UP": "stabilized_up",
    "STABILIZED_DOWN": "stabilized_down",
    "RATE_LIMITED_UP": "rate_limited_up",
    "RATE_LIMITED_DOWN": "rate_limited_down",
    "SCALE_UP_DISABLED": "scale_up_disabled",
    "SCALE_DOWN_DISABLED": "scale_down_disabled",
    "CLAMPED_MAX": "clamped_max",
    "CLAMPED_MIN": "clamped_min",
    "SCHEDULE_FLOOR": "schedule_floor",
    "SCHEDULE_CEILING": "schedule_ceiling",
    "MISSING_METRICS_HOLD": "missing_metrics_hold",
    "FALLBACK": "fallback",
    "ACTIVATION_START": "activation_start",
    "ACTIVATION_ZERO": "activation_zero",
    "COOLDOWN_HOLD": "cooldown_hold",
    "ZERO_HOLD": "zero_hold",
    "PANIC_SCALE_UP": "panic_scale_up",
    "PANIC_HOLD_DOWN": "panic_hold_down",
    "BOUNDS": "bounds",
    "FAILED": "failed",
    "PANIC_ENTER": "panic_enter",
    "FORECAST_FLOOR": "forecast_floor",
    "FORECAST_COVERED": "forecast_covered",
    "FORECAST_ONLY": "forecast_only",
    "FORECAST_UNAVAILABLE": "forecast_unavailable",
    "FORECAST_STALE": "forecast_stale",
}


def test_reason_codes_are_pinned():
    assert {r.name: r.value for r in Reason} == PINNED_REASONS
    assert tuple(PINNED_REASONS.values()) == REASONS


def test_steps_in_order():
    names = [fn.__name__.lstrip("_") for fn in STEPS]
    assert names == [
        "bounds", "paused", "proposals", "activity", "at_zero", "clamp", "all_failed",
        "combine", "cooldown", "forecast_floor", "remember", "burst", "behaviour",
    ]


def test_no_policy_function_over_80_lines():
    package = Path(decide_module.__file__).parent
    long = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.name}:{node.name}")
    assert long == []
