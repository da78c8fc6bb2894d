"""The steps of the ``autoscale`` flow (``flows/autoscale.py``), one workload at a time.

Per workload: read the orchestrator state, read the metrics, load the persisted PolicyState, decide
(``now`` from the clock). A decision that changes the replica count is applied with the same task
as ``scale`` (``apply_scale(spec, "absolute", n)``) inside the same per-workload lock and audit frame
(``run_action("autoscale", ...)``); under the lock the state and the policy state are read again and
the decision re-made, so an operation that ran meanwhile is never overwritten by a stale decision.
The decision record (DecisionRecord JSON) rides in the action record. The PolicyState is saved after
every evaluation (``state_if_not_applied()`` when the write failed or was refused).

Never scale in on a guess: failed or missing metrics hold (policy), and an orchestrator or
policy-state read error holds too (nothing is decided, nothing saved). Only actions and dry-run
plans create action records; every decision is logged and counted in the self-metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger

from flows.common import require_state, run_action, snapshot
from flows.scaling import apply_and_wait
from scalewise import autoscaler, selfmetrics
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.autoscaler import AutoscaleError, Evaluation, Result
from scalewise.hold import REASON as HOLD_REASON
from scalewise.metrics.base import MetricReading
from scalewise.model import WorkloadState
from scalewise.policy.decide import PolicyState
from scalewise.settings import workloads_path
from scalewise.spec import WorkloadSpec, load_workloads
from tasks.autoscale import evaluate, load_policy_state, read_metrics, save_policy_state
from tasks.hold import load_hold
from tasks.workload import read_state


@dataclass
class _Final:
    """The decision actually applied (re-made under the lock)."""

    evaluation: Evaluation | None = None
    applied: bool = False
    notes: list[str] = field(default_factory=list)


def _act_body(
    spec: WorkloadSpec,
    readings: list[MetricReading],
    final: _Final,
    reason: str,
    wait: bool,
    timeout_s: float,
) -> Any:
    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        fresh = require_state(spec)
        pinned = held_by_person(spec, get_run_logger())
        if pinned is not None:  # a manual scale ran meanwhile: it owns the count for now
            record.before = record.after = snapshot(fresh)
            record.reason_code, record.outcome = pinned.reason, "noop"
            record.reason = f"{reason}: {pinned.detail}"[:500]
            record.plan = [f"re-checked under the lock: {pinned.detail}"]
            return
        policy = load_policy_state(spec.name)
        decision, before = evaluate(spec, fresh, readings, policy, datetime.now(UTC))
        ev = Evaluation(spec.name, decision, before)
        final.evaluation = ev
        record.before = snapshot(fresh)
        record.decision = ev.record(spec).model_dump(mode="json")
        record.reason = f"{reason}: {autoscaler.summary(spec.name, decision)}"[:500]
        record.reason_code = decision.reason
        record.plan = autoscaler.describe(decision)
        if not decision.changed:
            record.outcome = "noop"
            record.plan.append("re-decided under the lock: no change")
            return
        def written() -> None:
            final.applied = True

        apply_and_wait(spec, record, "absolute", decision.desired, wait, timeout_s, on_written=written)

    return body


def _plan_body(spec: WorkloadSpec, ev: Evaluation, reason: str) -> Any:
    def body(_: WorkloadSpec, record: ActionRecord) -> None:
        d = ev.decision
        record.before = Snapshot(replicas=d.current, ready=d.inputs.ready)
        record.after = Snapshot(replicas=d.desired)
        record.decision = ev.record(spec).model_dump(mode="json")
        record.reason = f"{reason}: {autoscaler.summary(spec.name, d)}"[:500]
        record.reason_code = d.reason
        verb = f"would set replicas {d.current} -> {d.desired}" if d.changed else f"would keep {d.current}"
        record.plan = [f"{verb} ({d.reason})", *autoscaler.describe(d)]

    return body


def _save(workload: str, state: Any, logger: Any) -> bool:
    try:
        save_policy_state(workload, state)
        return True
    except Exception as exc:
        selfmetrics.ERRORS.labels(workload=workload, stage="save").inc()
        logger.error("%s: could not persist the policy state: %s: %s", workload, type(exc).__name__, exc)
        return False


@dataclass
class _Inputs:
    """What an evaluation needs, or why it holds (errors never become a decision)."""

    state: WorkloadState | None = None
    policy: PolicyState | None = None
    held: Result | None = None
    error: BaseException | None = None


def held_by_person(spec: WorkloadSpec, logger: Any) -> Result | None:
    """A ``manual_hold`` result while a manual scale pins the count (scalewise.hold); a hold that
    cannot be read holds too (never overwrite a person's count on a guess)."""
    try:
        hold = load_hold(spec.name)
    except Exception as exc:
        logger.warning("%s: manual hold unreadable, holding: %s: %s", spec.name, type(exc).__name__, exc)
        return Result(workload=spec.name, outcome="held", reason="hold_state_error", error=f"{exc}")
    now = datetime.now(UTC)
    if hold is None or not hold.active(now):
        return None
    detail = f"{hold.sentence(spec.name)} ({hold.operation} by {hold.by})"
    return Result(workload=spec.name, outcome="held", at=now, current=hold.replicas, desired=hold.replicas,
                  reason=HOLD_REASON, detail=detail)


def gather(
    spec: WorkloadSpec,
    read: Callable[..., WorkloadState | None],
    load: Callable[..., PolicyState | None],
    logger: Any,
) -> _Inputs:
    """Read the workload and its persisted policy state; an error in either holds the workload, and so
    does a manual hold (a person owns the count for now)."""
    name = spec.name
    pinned = held_by_person(spec, logger)
    if pinned is not None:
        selfmetrics.observe_decision(name, HOLD_REASON, False, pinned.desired or 0)
        return _Inputs(held=pinned)
    try:
        state = read(spec)
    except Exception as exc:
        selfmetrics.ERRORS.labels(workload=name, stage="state").inc()
        logger.warning("%s: orchestrator read failed, holding: %s: %s", name, type(exc).__name__, exc)
        held = Result(workload=name, outcome="held", reason="orchestrator_error", error=f"{exc}")
        return _Inputs(held=held, error=exc)
    if state is None:
        return _Inputs(held=Result(workload=name, outcome="skipped", reason="not_deployed"))
    try:
        policy = load(name)
    except Exception as exc:
        selfmetrics.ERRORS.labels(workload=name, stage="policy_state").inc()
        logger.warning("%s: policy state unreadable, holding: %s: %s", name, type(exc).__name__, exc)
        held = Result(workload=name, outcome="held", reason="policy_state_error", error=f"{exc}")
        return _Inputs(held=held, error=exc)
    return _Inputs(state=state, policy=policy)  # policy None: nothing stored yet


def _observe(ev: Evaluation, readings: list[MetricReading], t0: float, logger: Any) -> None:
    """Count and log one evaluation (self-metrics, run log)."""
    name, decision = ev.workload, ev.decision
    selfmetrics.EVALUATION_SECONDS.observe(time.monotonic() - t0)
    selfmetrics.observe_decision(name, decision.reason, decision.changed, decision.desired)
    for reading in readings:
        if not reading.ok:
            selfmetrics.ERRORS.labels(workload=name, stage="metrics").inc()
    logger.info("%s", autoscaler.summary(name, decision))
    for line in autoscaler.describe(decision):
        logger.info("  %s: %s", name, line)


def _planned(spec: WorkloadSpec, ev: Evaluation, reason: str, **audit: Any) -> Result:
    """Dry run: record the plan (an action record), change and save nothing."""
    decision = ev.decision
    planned = run_action("autoscale", spec.name, _plan_body(spec, ev, reason), reason=reason, dry_run=True, **audit)
    if decision.changed:
        selfmetrics.ACTIONS.labels(
            workload=spec.name, direction=selfmetrics.direction(decision.current, decision.desired), outcome="planned"
        ).inc()
    out = autoscaler.result_of(ev, "planned", spec)
    out.action_id = planned.id
    return out


def _act(
    spec: WorkloadSpec,
    ev: Evaluation,
    readings: list[MetricReading],
    logger: Any,
    *,
    reason: str,
    wait: bool,
    timeout_s: float,
    **audit: Any,
) -> tuple[Result, BaseException | None]:
    """Apply a changing decision under the lock (re-decided there), then save the state to keep."""
    name = spec.name
    final = _Final()
    error: BaseException | None = None
    record: ActionRecord | None = None
    try:
        record = run_action(
            "autoscale", name, _act_body(spec, readings, final, reason, wait, timeout_s), reason=reason,
            dry_run=False, **audit,
        )
    except Exception as exc:
        error = exc
        selfmetrics.ERRORS.labels(workload=name, stage="apply").inc()
        logger.error("%s: scaling failed: %s: %s", name, type(exc).__name__, exc)
    used = final.evaluation or ev
    d = used.decision
    outcome: autoscaler.Outcome
    if error is None and final.applied:
        _save(name, d.state, logger)
        outcome = "scaled" if record is not None and record.outcome == "succeeded" else "unchanged"
    elif error is None:
        _save(name, d.state, logger)  # re-decided under the lock: no change
        outcome = "unchanged"
    else:
        # The write may or may not have happened: keep the history, drop this tick's scale event
        # (a write that did land shows up as the current count on the next tick).
        _save(name, d.state_if_not_applied(), logger)
        outcome = "failed"
    selfmetrics.ACTIONS.labels(
        workload=name, direction=selfmetrics.direction(d.current, d.desired), outcome=outcome
    ).inc()
    result = autoscaler.result_of(used, outcome, spec)
    if record is not None:
        result.action_id = record.id
    if error is not None:
        result.error = f"{type(error).__name__}: {error}"
    return result, error


def _one(
    spec: WorkloadSpec,
    *,
    dry_run: bool,
    trigger: Trigger | None,
    observed_at: datetime | None,
    max_observation_age_s: float | None,
    reason: str,
    wait: bool,
    timeout_s: float,
) -> tuple[Result, BaseException | None]:
    """Evaluate one workload in the flow: gather (errors and holds hold), read metrics, decide, then
    plan (dry run), save (no change) or act."""
    logger = get_run_logger()
    name = spec.name
    t0 = time.monotonic()
    inputs = gather(spec, read_state, load_policy_state, logger)
    if inputs.held is not None:
        if inputs.held.reason == "not_deployed":
            logger.info("%s: not deployed on %s; skipped", name, spec.target)
        elif inputs.held.reason == HOLD_REASON:
            logger.info("%s: %s", name, inputs.held.detail)
        return inputs.held, inputs.error
    state, policy = inputs.state, inputs.policy
    assert state is not None
    readings = read_metrics(spec)
    decision, before = evaluate(spec, state, readings, policy, datetime.now(UTC))
    ev = Evaluation(name, decision, before)
    _observe(ev, readings, t0, logger)
    audit = {"trigger": trigger, "observed_at": observed_at, "max_observation_age_s": max_observation_age_s}
    if dry_run:
        return _planned(spec, ev, reason, **audit), None
    if not decision.changed:
        _save(name, decision.state, logger)
        return autoscaler.result_of(ev, "unchanged", spec), None
    return _act(spec, ev, readings, logger, reason=reason, wait=wait, timeout_s=timeout_s, **audit)


def select_workloads(workloads: list[str] | None, logger: Any) -> tuple[list[WorkloadSpec], list[Result]]:
    """The workloads to evaluate, and a ``skipped`` result for each one left out (logged when named)."""
    chosen, skipped = autoscaler.select(load_workloads(workloads_path()), workloads)
    for s in skipped:
        if workloads is not None:
            logger.info("%s: skipped (%s)", s.workload, s.why)
    return chosen, [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]


def evaluate_each(chosen: list[WorkloadSpec], logger: Any, **options: Any) -> list[Result]:
    """:func:`_one` for each workload; a failure in one never stops the others. Then raises the error
    if one failed, :class:`AutoscaleError` naming each if several did."""
    results: list[Result] = []
    errors: list[tuple[str, BaseException]] = []
    for spec in chosen:
        try:
            result, error = _one(spec, **options)
        except Exception as exc:  # a bug or an unexpected failure in one workload never stops the others
            selfmetrics.ERRORS.labels(workload=spec.name, stage="decide").inc()
            logger.exception("%s: evaluation failed", spec.name)
            result, error = Result(workload=spec.name, outcome="failed", error=f"{exc}"), exc
        results.append(result)
        if error is not None:
            errors.append((spec.name, error))
    if len(errors) == 1:
        raise errors[0][1]
    if errors:
        raise AutoscaleError(
            "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in errors)
        )
    return results


# -- scheduled runs: always act, late or not; one run per backlog (see flows/autoscale.py) ------------


@dataclass(frozen=True)
class _Scheduled:
    run_id: str
    deployment_id: str
    expected: datetime


def scheduled_run() -> _Scheduled | None:
    """This run, if a deployment's schedule created it."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None or not run.auto_scheduled or run.deployment_id is None or run.expected_start_time is None:
        return None
    return _Scheduled(str(run.id), str(run.deployment_id), run.expected_start_time)
