"""``autoscale``: evaluate the autoscaling policy of each configured workload and apply its decision.

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

Three ways to run it: the ``autoscale/scalewise`` deployment on an interval schedule, the same
deployment started at once by a ``scalewise.threshold.crossed`` event (``scalewise watch``), and
:func:`run_loop` (``scalewise autoscaler``), which evaluates in process every tick and calls this
flow in process for each workload whose replica count should change.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import Field

from flows.common import require_state, run_action, snapshot
from flows.params import ObservedAt, Reason, Timeout, WorkloadName
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
from tasks.forecast import load_model
from tasks.hold import load_hold
from tasks.policy_state import load_state, save_state
from tasks.schedule import scheduled_claim
from tasks.workload import read_state

Workloads = Annotated[
    list[WorkloadName] | None,
    Field(description="Workloads to evaluate (default: every workload with autoscaling)"),
]
AutoscaleMaxAge = Annotated[
    float | None,
    Field(gt=0, description="Refuse to act on an observation older than this, seconds (None: no limit)"),
]

log = logging.getLogger("scalewise.autoscaler")


def _run_name() -> str:
    params: dict[str, Any] = dict(flow_run.parameters or {})
    names = params.get("workloads") or ["all"]
    tail = "-dry-run" if params.get("dry_run") else ""
    return ("autoscale-" + "-".join(str(n) for n in names))[:80] + tail


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


def _gather(
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
    logger = get_run_logger()
    name = spec.name
    t0 = time.monotonic()
    inputs = _gather(spec, read_state, load_policy_state, logger)
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
    selfmetrics.EVALUATION_SECONDS.observe(time.monotonic() - t0)
    selfmetrics.observe_decision(name, decision.reason, decision.changed, decision.desired)
    for reading in readings:
        if not reading.ok:
            selfmetrics.ERRORS.labels(workload=name, stage="metrics").inc()
    logger.info("%s", autoscaler.summary(name, decision))
    for line in autoscaler.describe(decision):
        logger.info("  %s: %s", name, line)

    if dry_run:
        planned = run_action(
            "autoscale", name, _plan_body(spec, ev, reason), reason=reason, dry_run=True, trigger=trigger,
            observed_at=observed_at, max_observation_age_s=max_observation_age_s,
        )
        if decision.changed:
            selfmetrics.ACTIONS.labels(
                workload=name, direction=selfmetrics.direction(decision.current, decision.desired), outcome="planned"
            ).inc()
        out = autoscaler.result_of(ev, "planned", spec)
        out.action_id = planned.id
        return out, None

    if not decision.changed:
        _save(name, decision.state, logger)
        return autoscaler.result_of(ev, "unchanged", spec), None

    final = _Final()
    error: BaseException | None = None
    record: ActionRecord | None = None
    try:
        record = run_action(
            "autoscale", name, _act_body(spec, readings, final, reason, wait, timeout_s), reason=reason,
            dry_run=False, trigger=trigger, observed_at=observed_at, max_observation_age_s=max_observation_age_s,
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


# -- scheduled runs: always act, late or not; one run per backlog ---------------------------------
#
# A scheduled run reads its own metrics when it starts, so its observation is always fresh, however
# late it starts: it is never refused for lateness (on a busy machine every run may start late).
# Late runs are deduplicated instead, on two levels:
# * the deployment's concurrency limit (1, collision strategy CANCEL_NEW, declared in prefect.yaml):
#   while one autoscale run is in flight, the server cancels new ones before a process is started
#   for them (without it, a runner coming back after an outage starts a process per due run at once,
#   which on a small machine starved all of them);
# * a scheduled run that starts when another scheduled run already started evaluating after its
#   due time skips (ends Completed in a state named "Skipped", with the reason): the other run read
#   fresher metrics. Nothing is ever skipped for a run that has not started, so lateness cannot
#   starve the autoscaler. A backlog after an outage thus collapses into one acting run.


@dataclass(frozen=True)
class _Scheduled:
    run_id: str
    deployment_id: str
    expected: datetime


def _scheduled_run() -> _Scheduled | None:
    """This run, if a deployment's schedule created it."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None or not run.auto_scheduled or run.deployment_id is None or run.expected_start_time is None:
        return None
    return _Scheduled(str(run.id), str(run.deployment_id), run.expected_start_time)


@flow(name="autoscale", flow_run_name=_run_name, validate_parameters=True)
def autoscale(
    workloads: Workloads = None,
    dry_run: bool = False,
    trigger: Trigger | None = None,
    observed_at: ObservedAt = None,
    max_observation_age_s: AutoscaleMaxAge = 60.0,
    reason: Reason = "autoscaler",
    wait: bool = False,
    timeout_s: Timeout = 120.0,
) -> list[Result] | State[Any]:
    """Evaluate the autoscaling policy of workloads and apply each decision that changes replicas.

    A run created by the deployment's schedule may instead end Completed in a state named
    "Skipped" when another scheduled run acts for it (a late backlog collapses into one run).

    Args:
        workloads: Workloads to evaluate; default every workload with an autoscaling section.
        dry_run: Record what would be done (an action record per workload); change and save nothing.
        trigger: Who started this (filled in by the CLI, the watcher's trigger and the autoscaler loop).
        observed_at: Time of the observation that caused this run, if any.
        max_observation_age_s: Refuse to act on an observation older than this (seconds).
        reason: Why; recorded with each action.
        wait: Wait until a new replica count is ready.
        timeout_s: Bounded wait, seconds.
    """
    logger = get_run_logger()
    scheduled = _scheduled_run()
    if scheduled is not None:
        why = scheduled_claim(scheduled.run_id, scheduled.deployment_id, scheduled.expected)
        if why is not None:
            logger.info("skipped: %s", why)
            return Completed(name="Skipped", message=why, data=[])
        # a scheduled run observes when it starts (its readings are its own): fresh, however late
        observed_at = datetime.now(UTC)
    specs = load_workloads(workloads_path())
    chosen, skipped = autoscaler.select(specs, workloads)
    results: list[Result] = [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]
    for s in skipped:
        if workloads is not None:
            logger.info("%s: skipped (%s)", s.workload, s.why)
    errors: list[tuple[str, BaseException]] = []
    for spec in chosen:
        try:
            result, error = _one(
                spec, dry_run=dry_run, trigger=trigger, observed_at=observed_at,
                max_observation_age_s=max_observation_age_s, reason=reason, wait=wait, timeout_s=timeout_s,
            )
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


# -- dry-run without any write: `scalewise plan` ------------------------------------------------


def plan(workloads: list[str] | None = None) -> list[Result]:
    """What the autoscaler would do now and why, without writing anything (no run, lock or save)."""
    specs = load_workloads(workloads_path())
    chosen, skipped = autoscaler.select(specs, workloads)
    results = [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]
    found = autoscaler.sources()
    for spec in chosen:
        try:
            state = read_state.fn(spec)
        except Exception as exc:
            results.append(Result(workload=spec.name, outcome="held", reason="orchestrator_error", error=f"{exc}"))
            continue
        if state is None:
            results.append(Result(workload=spec.name, outcome="skipped", reason="not_deployed"))
            continue
        pinned = held_by_person(spec, log)
        if pinned is not None:
            results.append(pinned)
            continue
        try:
            policy = load_state(spec.name)
        except Exception as exc:
            results.append(Result(workload=spec.name, outcome="held", reason="policy_state_error", error=f"{exc}"))
            continue
        ev = autoscaler.evaluate_workload(spec, state, found, policy, load_model=load_model)
        results.append(autoscaler.result_of(ev, "planned", spec))
    return results


# -- the fast in-process loop: `scalewise autoscaler` --------------------------------------------
#
# Measured (prefect 3.9.1, SQLite server, 2 cores): one `autoscale` flow call per tick costs 1-4 s
# (flow and task run records, events, logs, and the server answering busy writes with a retry delay),
# so a flow run per tick cannot hold a 2 s interval. Each tick therefore evaluates in process with
# the same functions the tasks wrap (orchestrator read, metric sources, persisted PolicyState, the
# policy) and saves the state; only a decision that changes replicas (or, in dry-run, any change)
# calls the `autoscale` flow for that workload, which re-reads, re-decides and acts under the lock
# with the full audit record.


def _evaluate_quietly(spec: WorkloadSpec) -> tuple[Result | None, Evaluation | None]:
    """One evaluation without any Prefect run (the loop's no-change path); errors hold."""
    name = spec.name
    t0 = time.monotonic()
    inputs = _gather(spec, read_state.fn, load_state, log)
    if inputs.held is not None:
        return inputs.held, None
    state, policy = inputs.state, inputs.policy
    assert state is not None
    ev = autoscaler.evaluate_workload(spec, state, autoscaler.sources(), policy, load_model=load_model)
    selfmetrics.EVALUATION_SECONDS.observe(time.monotonic() - t0)
    for reading in ev.decision.inputs.readings:
        if not reading.ok:
            selfmetrics.ERRORS.labels(workload=name, stage="metrics").inc()
    return None, ev


def loop_tick(
    workloads: list[str] | None,
    trigger: Trigger,
    *,
    dry_run: bool = False,
    max_observation_age_s: float | None = 60.0,
    parallel: int = 8,
) -> list[Result]:
    """One tick of the fast loop over the selected workloads (see the note above)."""
    from concurrent.futures import ThreadPoolExecutor

    observed = datetime.now(UTC)
    chosen, skipped = autoscaler.select(load_workloads(workloads_path()), workloads)
    results = [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]
    # Prefect's settings (API URL) and run context live in context variables, which worker threads
    # do not inherit: each evaluation runs in a copy of this thread's context.
    contexts = [contextvars.copy_context() for _ in chosen]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(chosen) or 1))) as pool:
        evaluated = list(pool.map(lambda c, s: c.run(_evaluate_quietly, s), contexts, chosen))
    for spec, (early, ev) in zip(chosen, evaluated, strict=True):
        if ev is None:
            assert early is not None
            results.append(early)
            continue
        d = ev.decision
        selfmetrics.observe_decision(spec.name, d.reason, d.changed, d.desired)
        log.info("%s", autoscaler.summary(spec.name, d))
        for line in autoscaler.describe(d):
            log.debug("  %s: %s", spec.name, line)
        if not d.changed:
            if not dry_run:
                try:
                    save_state(spec.name, d.state)
                except Exception as exc:
                    selfmetrics.ERRORS.labels(workload=spec.name, stage="save").inc()
                    log.error("%s: could not persist the policy state: %s", spec.name, exc)
            results.append(autoscaler.result_of(ev, "unchanged", spec))
            continue
        try:  # act (or plan) through the audited flow: lock, re-decision, apply, record, save
            done = autoscale(
                workloads=[spec.name], dry_run=dry_run, trigger=trigger, observed_at=observed,
                max_observation_age_s=max_observation_age_s, reason="autoscaler loop",
            )
            assert isinstance(done, list)  # only scheduled runs are ever skipped
            results.extend(done)
        except Exception as exc:
            log.warning("%s: autoscale run failed: %s: %s", spec.name, type(exc).__name__, exc)
            failed = autoscaler.result_of(ev, "failed", spec)
            failed.error = f"{type(exc).__name__}: {exc}"
            results.append(failed)
    return results


def run_loop(
    interval_s: float = 2.0,
    workloads: list[str] | None = None,
    *,
    dry_run: bool = False,
    max_ticks: int | None = None,
    stop: threading.Event | None = None,
    max_observation_age_s: float | None = 60.0,
    on_tick: Any = None,
) -> int:
    """Run :func:`loop_tick` in this process every ``interval_s`` until stopped; returns ticks run.

    A tick that overruns the interval delays the next one (ticks never overlap).
    """
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    stop = stop or threading.Event()
    trigger = Trigger(
        kind="autoscaler", actor=f"scalewise-autoscaler@{socket.gethostname()}"[:200],
        detail=f"in-process loop every {interval_s:g}s",
    )
    ticks = 0
    next_at = time.monotonic()
    while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
        t0 = time.monotonic()
        results: list[Result] | None = None
        try:
            results = loop_tick(workloads, trigger, dry_run=dry_run, max_observation_age_s=max_observation_age_s)
        except Exception as exc:
            selfmetrics.ERRORS.labels(workload="*", stage="tick").inc()
            log.warning("autoscale tick failed: %s: %s", type(exc).__name__, exc)
        selfmetrics.TICK_SECONDS.observe(time.monotonic() - t0)
        ticks += 1
        if on_tick is not None:
            on_tick(ticks, results)
        next_at += interval_s
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()
            delay = 0.0
        if stop.wait(delay):
            break
    return ticks
