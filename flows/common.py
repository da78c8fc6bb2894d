"""The frame every mutating flow shares: trigger, spec, freshness check, lock, audit record.

A flow supplies only its body; whatever happens, an action record is written (artifact + event)
before the run ends, and a failure ends the run Failed with the reason.

Interrupted operations stay visible: a body calls :func:`begin` just before its first write to
the workload, which stores the record (trigger, plan, before) with outcome ``in_progress``; the
final record replaces it (same id). If the process dies in between, the record stays
``in_progress`` until the next operation on the workload takes the lock: that operation records the
old one as ``interrupted`` and notes in its own plan that it re-read the workload (the adapters
converge from whatever state they find, so it completes or repairs the half-done change).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from scalewise.audit import ActionRecord, Operation, Snapshot, Trigger
from scalewise.errors import ConvergenceTimeout, NotFoundError, RolloutFailed, StaleObservation
from scalewise.model import ConvergeResult, WorkloadState
from scalewise.spec import WorkloadSpec
from tasks.audit import current_flow_run_id, interrupted_records, record_action, resolve_trigger
from tasks.locking import workload_lock
from tasks.workload import load_workload, read_state, wait_until_ready

Body = Callable[[WorkloadSpec, ActionRecord], None]


def snapshot(state: WorkloadState | None) -> Snapshot:
    if state is None:
        return Snapshot()
    return Snapshot(
        replicas=state.desired_replicas, ready=state.ready_replicas, image=state.image, revision=state.revision
    )


def require_state(spec: WorkloadSpec) -> WorkloadState:
    state = read_state(spec)
    if state is None:
        raise NotFoundError(f"workload {spec.name!r} is not deployed on {spec.target}; run deploy first")
    return state


def check_fresh(observed_at: datetime | None, max_age_s: float | None, now: datetime) -> None:
    """Refuse to act on an observation older than ``max_age_s`` (a run queued while no runner was up)."""
    if observed_at is None or max_age_s is None:
        return
    seen = observed_at if observed_at.tzinfo else observed_at.replace(tzinfo=UTC)
    age = (now - seen).total_seconds()
    if age > max_age_s:
        raise StaleObservation(
            f"the observation that caused this run is {age:.0f}s old (limit {max_age_s:.0f}s); not acting on it"
        )


def begin(record: ActionRecord, intent: list[str] | None = None) -> None:
    """Store ``record`` as ``in_progress`` before the first write (once per record; not for dry runs).

    ``intent``: the plan to show while in progress when ``record.plan`` is still empty."""
    if record.dry_run or record.id in _begun:
        return
    _begun.add(record.id)
    update: dict[str, object] = {"outcome": "in_progress"}
    if intent and not record.plan:
        update["plan"] = list(intent)
    record_action(record.model_copy(update=update, deep=True))


_begun: set[str] = set()


def close_interrupted(record: ActionRecord) -> list[str]:
    """Under the lock: record every ``in_progress`` record of this workload (from a dead process) as
    ``interrupted``; returns the plan lines saying that this operation takes over from them."""
    notes: list[str] = []
    for old in interrupted_records(record.workload, exclude_run=record.flow_run_id):
        found = datetime.now(UTC)
        closed = old.model_copy(
            update={
                "outcome": "interrupted",
                "finished_at": found,
                "error": (
                    f"interrupted: the process running it stopped before it finished; found by "
                    f"{record.operation} {record.id} (run {record.flow_run_id or '-'}) at {found:%H:%M:%S} UTC"
                ),
            }
        )
        record_action(closed)
        notes.append(
            f"took over from interrupted {old.operation} {old.id} started {old.started_at:%H:%M:%S} UTC "
            f"({old.trigger.label()}): re-read the workload and converged from its current state"
        )
    return notes


def run_action(
    operation: Operation,
    workload: str,
    body: Body,
    *,
    reason: str,
    dry_run: bool,
    trigger: Trigger | None,
    image: str | None = None,
    observed_at: datetime | None = None,
    max_observation_age_s: float | None = None,
) -> ActionRecord:
    t0 = time.monotonic()
    started = datetime.now(UTC)
    who = resolve_trigger(trigger)
    spec = load_workload(workload, image)
    record = ActionRecord(
        operation=operation,
        workload=spec.name,
        target=spec.target,
        trigger=who,
        reason=reason,
        dry_run=dry_run,
        started_at=started,
        config_version=spec.spec_hash(),
        flow_run_id=current_flow_run_id(),
        observed_at=observed_at,
        outcome="planned" if dry_run else "succeeded",
    )
    notes: list[str] = []
    try:
        check_fresh(observed_at, max_observation_age_s, started)
        if dry_run:
            body(spec, record)
        else:
            t_lock = time.monotonic()
            with workload_lock(spec.name):
                timed(record, "lock_s", t_lock)
                notes = close_interrupted(record)
                body(spec, record)
    except Exception as exc:
        record.plan[:0] = notes
        record.outcome = "rolled_back" if isinstance(exc, RolloutFailed) else "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        _finish(record, t0)
        record_action(record)
        raise
    record.plan[:0] = notes
    _finish(record, t0)
    return record_action(record)


def _finish(record: ActionRecord, t0: float) -> None:
    _begun.discard(record.id)
    record.finished_at = datetime.now(UTC)
    record.durations["total_s"] = round(time.monotonic() - t0, 3)


def timed(record: ActionRecord, key: str, t0: float) -> None:
    record.durations[key] = round(time.monotonic() - t0, 3)


def wait_recorded(
    spec: WorkloadSpec, record: ActionRecord, timeout_s: float, failure: Callable[[ConvergeResult], str]
) -> ConvergeResult:
    """The bounded wait (``wait_until_ready``), timed as ``wait_s`` and recorded as ``record.after``;
    a wait that does not converge raises :class:`ConvergenceTimeout` with ``failure(result)``."""
    t1 = time.monotonic()
    result = wait_until_ready(spec, timeout_s)
    timed(record, "wait_s", t1)
    record.after = snapshot(result.state)
    if not result.converged:
        raise ConvergenceTimeout(failure(result))
    return result
