"""The steps of the ``autoscale`` flow (``flows/autoscale.py``), one workload at a time.

Per workload the evaluation service (:func:`scalewise.autoscaler.evaluate_workload`, the one path
``plan``, the fast loop and the backtest use too) reads the manual hold, the orchestrator state, the
persisted PolicyState, the metrics and the forecast through task runs (``tasks.autoscale.FLOW_READS``)
and decides (``now`` from the clock). A decision that changes the replica count is applied with the same task
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
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prefect import get_run_logger

from flows.common import require_state, run_action, snapshot
from flows.scaling import apply_and_wait
from scalewise import autoscaler, selfmetrics
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.autoscaler import AutoscaleError, Evaluation, Held, Result
from scalewise.hold import REASON as HOLD_REASON
from scalewise.settings import workloads_path
from scalewise.spec import WorkloadSpec, load_workloads
from tasks.autoscale import FLOW_READS, save_policy_state


@dataclass
class _Final:
    """The decision actually applied (re-made under the lock)."""

    evaluation: Evaluation | None = None
    applied: bool = False
    notes: list[str] = field(default_factory=list)


def _act_body(
    spec: WorkloadSpec,
    seen: Evaluation,
    final: _Final,
    reason: str,
    wait: bool,
    timeout_s: float,
) -> Any:
    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        fresh = require_state(spec)
        # re-decided on the same readings (and the replica listing they were read with), with the
        # state, hold and policy state read again
        inputs = seen.decision.inputs
        reads = replace(FLOW_READS, state=lambda _: fresh, replicas=lambda _: inputs.replicas,
                        metrics=lambda _, __: inputs.readings)
        ev = autoscaler.evaluate_workload(spec, reads)
        if isinstance(ev, Held):
            if not ev.pinned:
                raise ev.error or AutoscaleError(f"{spec.name}: {ev.result.reason}")
            _warn(ev, get_run_logger())  # a manual scale ran meanwhile: it owns the count for now
            record.before = record.after = snapshot(fresh)
            record.reason_code, record.outcome = ev.result.reason, "noop"
            record.reason = f"{reason}: {ev.result.detail}"[:500]
            record.plan = [f"re-checked under the lock: {ev.result.detail}"]
            return
        decision = ev.decision
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


def _warn(held: Held, logger: Any) -> None:
    if held.warning:
        logger.warning("%s: %s", held.workload, held.warning)


def noted(held: Held, logger: Any) -> Held:
    """Log and count an evaluation that held (a failed read, a manual hold); returns it."""
    _warn(held, logger)
    if held.stage is not None:
        selfmetrics.ERRORS.labels(workload=held.workload, stage=held.stage).inc()
    elif held.pinned:
        selfmetrics.observe_decision(held.workload, HOLD_REASON, False, held.result.desired or 0)
    return held


def counted(ev: Evaluation, t0: float) -> Evaluation:
    """Count one evaluation's time and its failed metric reads (self-metrics); returns it."""
    selfmetrics.EVALUATION_SECONDS.observe(time.monotonic() - t0)
    for reading in ev.decision.inputs.readings:
        if not reading.ok:
            selfmetrics.ERRORS.labels(workload=ev.workload, stage="metrics").inc()
    return ev


def _observe(ev: Evaluation, t0: float, logger: Any) -> None:
    """Count and log one evaluation (self-metrics, run log)."""
    name, decision = ev.workload, ev.decision
    counted(ev, t0)
    selfmetrics.observe_decision(name, decision.reason, decision.changed, decision.desired)
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
        body = _act_body(spec, ev, final, reason, wait, timeout_s)
        record = run_action("autoscale", name, body, reason=reason, dry_run=False, **audit)
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
    ev = autoscaler.evaluate_workload(spec, FLOW_READS)
    if isinstance(ev, Held):
        noted(ev, logger)
        if ev.result.reason == "not_deployed":
            logger.info("%s: not deployed on %s; skipped", name, spec.target)
        elif ev.result.reason == HOLD_REASON:
            logger.info("%s: %s", name, ev.result.detail)
        return ev.result, ev.error
    decision = ev.decision
    _observe(ev, t0, logger)
    audit = {"trigger": trigger, "observed_at": observed_at, "max_observation_age_s": max_observation_age_s}
    if dry_run:
        return _planned(spec, ev, reason, **audit), None
    if not decision.changed:
        _save(name, decision.state, logger)
        return autoscaler.result_of(ev, "unchanged", spec), None
    return _act(spec, ev, logger, reason=reason, wait=wait, timeout_s=timeout_s, **audit)


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
