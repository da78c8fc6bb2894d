"""Declarative autoscaling configuration (``autoscaling:`` block of a workload spec).

Semantics follow the Kubernetes HPA (tolerance, behavior, stabilization windows, rate policies),
KEDA (activation threshold, scale to zero with a cooldown, fallback after N failed reads) and
Knative (panic mode on bursts). Pure data: validated here, evaluated by :mod:`scalewise.policy.decide`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from scalewise.durations import Duration

METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


def check_metric_name(value: str) -> str:
    """A metric's name (autoscaling metrics, analysis metrics): the field validator both use."""
    if not METRIC_NAME_RE.match(value):
        raise ValueError("must start with a lowercase letter and use only [a-z0-9_-], at most 63 chars")
    return value
PLACEHOLDERS: tuple[str, ...] = ("workload", "namespace", "target")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

TargetType = Literal["value", "average_value", "utilization"]
SourceKind = Literal["prometheus", "docker_cpu"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(query: str) -> str:
    """Every ``{placeholder}`` must be known and sit inside a double-quoted PromQL string literal.

    The values are escaped for a double-quoted literal; outside one, escaping could not prevent
    injection, so such templates are refused when the spec is loaded.
    """
    in_string: str | None = None
    i = 0
    while i < len(query):
        ch = query[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == in_string:
                in_string = None
        elif ch in ("'", '"', "`"):
            in_string = ch
        if ch == "{":
            match = _PLACEHOLDER_RE.match(query, i)
            if match:
                name = match.group(1)
                if name not in PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} in query (known: "
                        + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                        + ")"
                    )
                if in_string != '"':
                    raise ValueError(
                        f'placeholder {{{name}}} must be inside a double-quoted label value, e.g. workload="{{{name}}}"'
                    )
                i = match.end()
                continue
        i += 1
    if in_string:
        raise ValueError("query has an unterminated string literal")
    return query


class MetricTarget(_Strict):
    """One signal and its target. ``query`` is a PromQL template for the Prometheus source."""

    name: str = Field(description="Metric name, unique within the workload ([a-z][a-z0-9_-]*)")
    source: SourceKind = "prometheus"
    query: str | None = Field(default=None, description="PromQL template; {workload} etc. are substituted")
    type: TargetType = Field(default="average_value", description="How the reading compares to the target")
    target: float = Field(gt=0, description="Target value (a percentage for 'utilization')")
    activation: float = Field(
        default=0.0, ge=0, description="KEDA activation threshold: active when the value is above it"
    )
    on_empty: Literal["fail", "zero"] = Field(
        default="fail", description="An empty query result is a failed read ('fail') or the value 0 ('zero')"
    )
    multiple_series: Literal["sum", "max", "error"] = Field(
        default="error", description="What the Prometheus source does when the query returns several series"
    )
    per_replica_label: str | None = Field(
        default=None, description="Label whose value names the replica; its series become per-replica values"
    )

    _name = field_validator("name")(check_metric_name)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty")
        return _check_template(value)

    @field_validator("per_replica_label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be a Prometheus label name")
        return value

    @model_validator(mode="after")
    def _source(self) -> MetricTarget:
        if self.source == "prometheus" and self.query is None:
            raise ValueError("a 'prometheus' metric needs a 'query'")
        if self.source == "docker_cpu":
            if self.query is not None:
                raise ValueError("a 'docker_cpu' metric takes no 'query'")
            if self.type == "value":
                raise ValueError("a 'docker_cpu' metric is per replica: use type 'utilization' or 'average_value'")
        return self


class ScalingPolicy(_Strict):
    """HPA ``HPAScalingPolicy``: at most ``value`` pods (or percent) of change per ``period``."""

    type: Literal["pods", "percent"]
    value: int = Field(gt=0, le=100_000)
    period: Duration = Field(default=15.0, description="Look-back period, 0 < period <= 30m")

    @field_validator("period")
    @classmethod
    def _period(cls, value: float) -> float:
        if not 0 < value <= 1800:
            raise ValueError("must be more than 0 and at most 30m (HPA limit)")
        return value


class ScalingRules(_Strict):
    stabilization_window: Duration = Field(default=0.0, le=3600.0)
    tolerance: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="Tolerance for this direction (Kubernetes 1.33+); default: the spec's 'tolerance'",
    )
    policies: list[ScalingPolicy] = Field(default_factory=list)
    select_policy: Literal["max", "min", "disabled"] = "max"

    @model_validator(mode="after")
    def _non_empty(self) -> ScalingRules:
        if not self.policies and self.select_policy != "disabled":
            raise ValueError("needs at least one policy (or select_policy: disabled)")
        return self


def _default_up() -> ScalingRules:
    return ScalingRules(
        stabilization_window=0.0,
        policies=[
            ScalingPolicy(type="percent", value=100, period=15.0),
            ScalingPolicy(type="pods", value=4, period=15.0),
        ],
        select_policy="max",
    )


def _default_down() -> ScalingRules:
    return ScalingRules(
        stabilization_window=300.0,
        policies=[ScalingPolicy(type="percent", value=100, period=15.0)],
        select_policy="max",
    )


class Behavior(_Strict):
    """HPA ``behavior``; an omitted direction gets the HPA defaults."""

    scale_up: ScalingRules = Field(default_factory=_default_up)
    scale_down: ScalingRules = Field(default_factory=_default_down)


class ScaleToZero(_Strict):
    """KEDA-style: with ``enabled`` and a min of 0, the activation thresholds decide 0 <-> 1."""

    enabled: bool = False
    cooldown: Duration = Field(default=300.0, description="Inactive this long before going to zero")


class Fallback(_Strict):
    """KEDA ``fallback``: after ``failure_threshold`` consecutive ticks where every read failed."""

    failure_threshold: int = Field(default=3, ge=1, le=1000)
    replicas: int | Literal["hold"] = "hold"

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int | str) -> int | str:
        if isinstance(value, bool) or (isinstance(value, int) and not 0 <= value <= 10_000):
            raise ValueError("must be a replica count (0-10000) or 'hold'")
        return value


class Burst(_Strict):
    """Knative panic mode: a reading at ``panic_threshold`` x target enters panic for ``panic_window``.

    In panic, scale-up skips the stabilization window and rate policies, and scale-down is refused.
    """

    enabled: bool = True
    panic_threshold: float = Field(default=2.0, gt=1.0, le=100.0, description="2.0 = 200% of target")
    panic_window: Duration = Field(default=60.0, gt=0, description="Panic lasts this long after the last burst")


class Schedule(_Strict):
    """A cron window that raises the floor and/or lowers the ceiling while it is active."""

    cron: str
    duration: Duration = Field(gt=0, description="How long the window stays active after each cron time")
    timezone: str = "UTC"
    min: int | None = Field(default=None, ge=0, le=10_000)
    max: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # here, not at import: every CLI call and flow run imports this module

        if len(value.split()) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (5 fields, e.g. '0 8 * * 1-5')")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            hint = ""
            lowered = value.lower()
            close = sorted(z for z in available_timezones() if z.lower() == lowered)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
            raise ValueError(f"unknown time zone {value!r}{hint}") from None
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Schedule:
        if self.min is None and self.max is None:
            raise ValueError("a schedule sets 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def active_at(self, now: datetime) -> bool:
        """True when some cron time ``t`` satisfies ``t <= now < t + duration`` (in ``timezone``)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        local = now.astimezone(ZoneInfo(self.timezone))
        # Cron times fall on whole minutes (whole seconds with a 6-field cron): the latest one at or
        # before ``now`` only depends on ``now`` truncated to that resolution, which is memoised.
        probe = local.replace(microsecond=0) if len(self.cron.split()) == 6 else local.replace(second=0, microsecond=0)
        start = _latest_fire(self.cron, probe)
        return 0 <= (local - start).total_seconds() < self.duration


@lru_cache(maxsize=8192)
def _latest_fire(cron: str, probe: datetime) -> datetime:
    """The latest cron time at or before ``probe`` (croniter's get_prev is strict, hence +1s)."""
    from croniter import croniter

    result: datetime = croniter(cron, probe + timedelta(seconds=1)).get_prev(datetime)
    return result


class Predictive(_Strict):
    """Predictive scaling: a forecast of ``metric`` over ``horizon`` becomes a replica floor.

    ``floor = ceil(forecast x (1 + margin) / target)``, combined with the reactive proposal by max; the
    forecast alone never scales in (AWS predictive scaling). ``forecast_only`` records the floor
    without acting on it. ``target`` defaults to the metric's own target; a ``recent`` forecast is a
    high quantile that already holds the headroom, so it is usually set to what one replica serves.
    """

    metric: str = Field(description="Name of an 'average_value' metric in 'metrics' (the demand total)")
    forecaster: Literal["seasonal_window", "holt_winters", "recent"] = Field(
        default="seasonal_window",
        description="'seasonal_window': mean of the same phase over the last seasons (no training); "
        "'holt_winters': a model trained by the train-forecast flow; "
        "'recent': mean + deviations x standard deviation of the last 'window' (no history needed beyond it)",
    )
    horizon: Duration = Field(
        default=60.0, gt=0, le=86400.0, description="How far ahead: a replica's start-up time plus one scrape"
    )
    margin: float = Field(default=0.1, ge=0.0, le=10.0, description="Safety margin over the forecast")
    season: Duration = Field(default=86400.0, ge=60.0, le=31 * 86400.0, description="Length of one season")
    seasons: int = Field(default=7, ge=1, le=60, description="Past seasons the seasonal window averages")
    step: Duration = Field(default=60.0, gt=0, le=3600.0, description="Resolution of the demand history")
    level_window: Duration = Field(
        default=0.0, ge=0.0, le=86400.0,
        description="seasonal_window: scale the seasonal profile by the demand of the last level_window over "
        "the same phase in past seasons (0: off)",
    )
    window: Duration = Field(
        default=1800.0, gt=0.0, le=86400.0, description="recent: the past window the mean and deviation cover"
    )
    deviations: float = Field(
        default=3.0, ge=0.0, le=10.0, description="recent: standard deviations above the mean the forecast holds"
    )
    target: float | None = Field(
        default=None, gt=0.0, description="Per-replica demand the floor plans for (default: the metric's target)"
    )
    mode: Literal["forecast_and_scale", "forecast_only"] = "forecast_and_scale"
    max_model_age: Duration = Field(
        default=2 * 86400.0, gt=0, description="A trained model older than this is refused (holt_winters)"
    )
    fallback: Literal["seasonal_window", "none"] = Field(
        default="seasonal_window", description="When the trained model is missing or stale"
    )

    @model_validator(mode="after")
    def _step(self) -> Predictive:
        if self.step > self.season:
            raise ValueError(f"step ({self.step:g}s) is longer than the season ({self.season:g}s)")
        if self.forecaster == "recent" and self.window < 4 * self.step:
            raise ValueError(f"window ({self.window:g}s) must hold at least 4 steps of {self.step:g}s")
        return self


class AutoscalingSpec(_Strict):
    """The ``autoscaling`` block of a workload."""

    metrics: list[MetricTarget] = Field(min_length=1)
    tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)
    behavior: Behavior = Field(default_factory=Behavior)
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero)
    fallback: Fallback = Field(default_factory=Fallback)
    burst: Burst | None = None
    schedules: list[Schedule] = Field(default_factory=list)
    stale_after: Duration | None = Field(
        default=None, gt=0, description="A reading older than this (vs. now) counts as a failed read"
    )
    predictive: Predictive | None = None
    paused: bool = False
    manual_hold: Duration = Field(
        default=600.0, ge=0.0, le=86400.0,
        description="A manual scale pins the replica count this long (0: the autoscaler may change it at once)",
    )

    _hash: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _predictive_metric(self) -> AutoscalingSpec:
        if self.predictive is None:
            return self
        by_name = {m.name: m for m in self.metrics}
        metric = by_name.get(self.predictive.metric)
        if metric is None:
            raise ValueError(
                f"predictive.metric: {self.predictive.metric!r} is not one of the metrics ({', '.join(by_name)})"
            )
        if metric.type != "average_value":
            raise ValueError(
                f"predictive.metric: {metric.name!r} must be an 'average_value' metric (a demand total spread "
                f"over the replicas), not {metric.type!r}"
            )
        return self

    def predictive_target(self) -> float:
        """The per-replica demand the forecast floor plans for: ``predictive.target``, else the metric's target."""
        assert self.predictive is not None
        if self.predictive.target is not None:
            return self.predictive.target
        return next(m.target for m in self.metrics if m.name == self.predictive.metric)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[MetricTarget]) -> list[MetricTarget]:
        names = [m.name for m in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric names must be unique; repeated: {', '.join(dup)}")
        return value

    def tolerances(self) -> tuple[float, float]:
        """(scale-up, scale-down) tolerance: the per-direction ones, else ``tolerance``."""
        up, down = self.behavior.scale_up.tolerance, self.behavior.scale_down.tolerance
        return (self.tolerance if up is None else up, self.tolerance if down is None else down)

    def config_hash(self) -> str:
        """Stable short hash of this block (the config version recorded with each decision).

        Fields added later are left out while unset, so a spec keeps the hash it had before them.
        """
        private = self.__pydantic_private__  # direct: the attribute path costs more than the hash on a hot tick
        cached: str | None = private.get("_hash") if private else None
        if cached is not None:
            return cached
        data = self.model_dump(mode="json")
        for rules in data["behavior"].values():
            if rules.get("tolerance") is None:
                rules.pop("tolerance", None)
        if data.get("predictive") is None:
            data.pop("predictive", None)
        else:  # fields added later, left out at their defaults so older specs keep their hash
            added = {"level_window": 0.0, "window": 1800.0, "deviations": 3.0, "target": None}
            for key, default in added.items():
                if data["predictive"].get(key, default) == default:
                    data["predictive"].pop(key, None)
        if data.get("manual_hold") == type(self).model_fields["manual_hold"].default:
            data.pop("manual_hold", None)
        blob = json.dumps(data, sort_keys=True).encode()
        cached = hashlib.sha256(blob).hexdigest()[:12]
        self._hash = cached
        return cached

    def __eq__(self, other: object) -> bool:
        """Equal when the fields are: the cached config hash (a private attribute) plays no part."""
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        """From the config hash, which equal specs share (the fields hold lists, so they cannot be hashed)."""
        return hash(self.config_hash())

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> AutoscalingSpec:
        """A copy; with ``update`` its config hash is computed afresh (the cached one is for the old fields)."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._hash = None
        return copy
