"""``scalewise watch``: a light loop that turns threshold crossings into Prefect events.

Every ``interval`` seconds it reads each autoscaled workload's metrics (the same sources as the
autoscaler) and compares each with its thresholds:

* derived from the spec: a metric is *above* when its value per replica (or its plain value) exceeds
  ``target x (1 + tolerance)`` and the workload is below its max, *below* when it is under
  ``target x (1 - tolerance)`` and the workload is above its min (what the HPA's tolerance means);
* explicit: ``--rule web:load>80`` / ``--rule web:load<20`` compare the same value with a number.

A crossing emits ``scalewise.threshold.crossed`` (resource ``scalewise.workload.<name>``, payload
``metric, value, threshold, direction, observed_at``), which the ``autoscale`` deployment's trigger
turns into a run for that workload. Edge-triggered: a rule fires once when it becomes true and is
re-armed when the value is back inside the band (at or past the target for derived rules, 5% back
past the number for explicit ones). While it stays true it fires again after ``repeat_s`` or as soon
as the replica count changed (a rate-limited scale-up needs several steps). A failed read never fires.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from scalewise import autoscaler, selfmetrics, ticker
from scalewise.audit import workload_resource_id
from scalewise.metrics.base import Clock, MetricSource, utc_now
from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.spec import WorkloadSpec

EVENT = "scalewise.threshold.crossed"
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 300.0
EXPLICIT_HYSTERESIS = 0.05

Direction = Literal["up", "down"]
log = logging.getLogger("scalewise.watcher")

_RULE = re.compile(
    r"^(?P<workload>[a-z0-9]([-a-z0-9]*[a-z0-9])?):(?P<metric>[a-z][a-z0-9_\-]*)(?P<op>[<>])(?P<value>.+)$"
)


@dataclass(frozen=True)
class Threshold:
    workload: str
    metric: str
    direction: Direction
    value: float
    rearm: float  # the rule re-arms once the value is back at or past this
    explicit: bool = False

    def breached(self, value: float) -> bool:
        return value > self.value if self.direction == "up" else value < self.value

    def rearmed(self, value: float) -> bool:
        return value <= self.rearm if self.direction == "up" else value >= self.rearm


def parse_rule(text: str) -> Threshold:
    """``WORKLOAD:METRIC>VALUE`` (direction up) or ``WORKLOAD:METRIC<VALUE`` (down)."""
    match = _RULE.match(text.strip())
    if not match:
        raise ValueError(f"bad rule {text!r}: use WORKLOAD:METRIC>VALUE or WORKLOAD:METRIC<VALUE")
    try:
        value = float(match["value"])
    except ValueError:
        raise ValueError(f"bad rule {text!r}: {match['value']!r} is not a number") from None
    up = match["op"] == ">"
    span = abs(value) * EXPLICIT_HYSTERESIS
    return Threshold(
        workload=match["workload"], metric=match["metric"], direction="up" if up else "down", value=value,
        rearm=value - span if up else value + span, explicit=True,
    )


def thresholds_for(spec: WorkloadSpec) -> list[Threshold]:
    """The derived thresholds of every metric: target x (1 +/- tolerance), re-armed at the target."""
    auto = spec.autoscaling
    if auto is None:
        return []
    result = []
    for m in auto.metrics:
        up, down = auto.tolerances()
        result.append(Threshold(spec.name, m.name, "up", m.target * (1 + up), m.target))
        result.append(Threshold(spec.name, m.name, "down", m.target * (1 - down), m.target))
    return result


def comparable(metric: MetricTarget, reading: MetricReading, replicas: int | None) -> float | None:
    """The number compared with the target: per replica, except for ``type: value`` (None: unknown)."""
    if not reading.ok:
        return None
    if reading.values is not None:
        values = list(reading.values.values())
        if not values:
            return None
        return sum(values) if metric.type == "value" else sum(values) / len(values)
    if reading.value is None:
        return None
    if metric.type == "average_value":  # a total spread over the replicas
        if not replicas:
            return None
        return reading.value / replicas
    return reading.value


@dataclass(frozen=True)
class Crossing:
    workload: str
    metric: str
    value: float
    threshold: float
    direction: Direction
    observed_at: datetime
    replicas: int | None = None
    explicit: bool = False

    def resource(self) -> dict[str, str]:
        return {"prefect.resource.id": workload_resource_id(self.workload), "prefect.resource.name": self.workload}

    def payload(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "direction": self.direction,
            "observed_at": self.observed_at.isoformat(),
            "replicas": self.replicas,
            "explicit": self.explicit,
        }


Emit = Callable[[Crossing], None]


def prefect_emitter() -> Emit:
    """Emit each crossing as a Prefect event (to the API in PREFECT_API_URL)."""
    from prefect.events import emit_event

    def emit(crossing: Crossing) -> None:
        emit_event(
            event=EVENT, resource=crossing.resource(), occurred=crossing.observed_at, payload=crossing.payload()
        )

    return emit


def orchestrator_replicas(spec: WorkloadSpec) -> int | None:
    """The desired replica count the orchestrator reports (None when it cannot be read)."""
    from scalewise import orchestrators

    try:
        orch = orchestrators.for_target(spec.target)
        return orch.read(spec).desired_replicas
    except Exception as exc:
        log.debug("%s: replica count unavailable: %s", spec.name, exc)
        return None


def orchestrator_listing(spec: WorkloadSpec) -> list[ReplicaInfo] | None:
    """The replicas the orchestrator lists (None when they cannot be listed: ``docker_cpu`` then fails its read)."""
    from scalewise import orchestrators

    try:
        return orchestrators.for_target(spec.target).replicas(spec)
    except Exception as exc:
        log.debug("%s: replica listing unavailable: %s", spec.name, exc)
        return None


@dataclass
class _Armed:
    fired_at: float | None = None
    fired_replicas: int | None = None


class Watcher:
    """Evaluates threshold rules; call :meth:`tick` or :meth:`run`."""

    def __init__(
        self,
        specs: Callable[[], Mapping[str, WorkloadSpec]],
        emit: Emit,
        *,
        sources: Callable[[], Mapping[str, MetricSource]] = autoscaler.sources,
        workloads: Sequence[str] | None = None,
        rules: Sequence[Threshold] = (),
        derived: bool = True,
        replicas: Callable[[WorkloadSpec], int | None] = orchestrator_replicas,
        listing: Callable[[WorkloadSpec], list[ReplicaInfo] | None] = orchestrator_listing,
        repeat_s: float = 15.0,
        clock: Clock = utc_now,
    ) -> None:
        if repeat_s <= 0:
            raise ValueError("repeat_s must be positive")
        self._specs = specs
        self._emit = emit
        self._sources = sources
        self._workloads = list(workloads) if workloads is not None else None
        self._rules = list(rules)
        self._derived = derived
        self._replicas = replicas
        self._listing = listing
        self.repeat_s = repeat_s
        self._clock = clock
        self._state: dict[tuple[str, str, str, float], _Armed] = {}
        self.emitted = 0

    def _rules_for(self, spec: WorkloadSpec) -> list[Threshold]:
        rules = thresholds_for(spec) if self._derived else []
        rules += [r for r in self._rules if r.workload == spec.name]
        return rules

    def tick(self) -> list[Crossing]:
        """One pass over every watched workload; returns (and emits) the crossings."""
        t0 = time.monotonic()
        chosen, _ = autoscaler.select(self._specs(), self._workloads)
        found = self._sources()
        crossings: list[Crossing] = []
        for spec in chosen:
            try:
                crossings.extend(self._check(spec, found))
            except Exception as exc:  # one workload never stops the others
                selfmetrics.WATCH_ERRORS.labels(workload=spec.name, stage="check").inc()
                log.warning("%s: threshold check failed: %s: %s", spec.name, type(exc).__name__, exc)
        selfmetrics.WATCH_TICK_SECONDS.observe(time.monotonic() - t0)
        return crossings

    def _check(self, spec: WorkloadSpec, found: Mapping[str, MetricSource]) -> list[Crossing]:
        assert spec.autoscaling is not None
        rules = self._rules_for(spec)
        if not rules:
            return []
        listed = self._listing(spec)
        readings = {r.name: r for r in autoscaler.read_metrics(spec, found, self._clock, listed)}
        replicas = self._replicas(spec)
        metrics = {m.name: m for m in spec.autoscaling.metrics}
        out: list[Crossing] = []
        now = time.monotonic()
        for rule in rules:
            metric, reading = metrics.get(rule.metric), readings.get(rule.metric)
            if metric is None or reading is None:
                continue
            if not reading.ok:
                selfmetrics.WATCH_ERRORS.labels(workload=spec.name, stage="metrics").inc()
                continue
            value = comparable(metric, reading, replicas)
            if value is None:
                continue
            key = (rule.workload, rule.metric, rule.direction, rule.value)
            armed = self._state.setdefault(key, _Armed())
            can_act = True
            if not rule.explicit and replicas is not None:
                can_act = replicas < spec.replicas.max if rule.direction == "up" else replicas > spec.replicas.min
            if rule.breached(value) and can_act:
                due = (
                    armed.fired_at is None
                    or now - armed.fired_at >= self.repeat_s
                    or (replicas is not None and replicas != armed.fired_replicas)
                )
                if due:
                    crossing = Crossing(
                        spec.name, rule.metric, value, rule.value, rule.direction, reading.timestamp, replicas,
                        rule.explicit,
                    )
                    if self._send(crossing):
                        armed.fired_at, armed.fired_replicas = now, replicas
                        out.append(crossing)
            elif armed.fired_at is not None and (rule.rearmed(value) or not can_act):
                armed.fired_at = armed.fired_replicas = None
        return out

    def _send(self, crossing: Crossing) -> bool:
        try:
            self._emit(crossing)
        except Exception as exc:
            selfmetrics.WATCH_ERRORS.labels(workload=crossing.workload, stage="emit").inc()
            log.warning("%s: could not emit %s: %s: %s", crossing.workload, EVENT, type(exc).__name__, exc)
            return False
        self.emitted += 1
        selfmetrics.THRESHOLD_EVENTS.labels(
            workload=crossing.workload, metric=crossing.metric, direction=crossing.direction
        ).inc()
        log.info(
            "%s: %s %s %.4g (threshold %.4g) observed %s", crossing.workload, crossing.metric,
            "above" if crossing.direction == "up" else "below", crossing.value, crossing.threshold,
            crossing.observed_at.isoformat(),
        )
        return True

    def run(
        self, interval_s: float = 2.0, *, max_ticks: int | None = None, stop: threading.Event | None = None
    ) -> int:
        """Tick every ``interval_s`` (bounded to [0.2s, 300s]) until ``stop`` or ``max_ticks``."""
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"interval must be within [{MIN_INTERVAL_S:g}s, {MAX_INTERVAL_S:g}s]")
        return ticker.every(interval_s, lambda _: self.tick(), max_ticks=max_ticks, stop=stop)
