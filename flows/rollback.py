from __future__ import annotations

import time

from prefect import flow

from flows.common import begin, require_state, run_action, snapshot, timed
from flows.params import Reason, Timeout, WorkloadName
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.errors import ConvergenceTimeout, PermanentError
from scalewise.spec import WorkloadSpec
from tasks.workload import apply_rollback, list_revisions, wait_until_ready


@flow(name="rollback", flow_run_name="rollback-{workload}", validate_parameters=True)
def rollback(
    workload: WorkloadName,
    to_revision: int | None = None,
    reason: Reason = "rollback",
    dry_run: bool = False,
    timeout_s: Timeout = 180.0,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Roll back to the previous revision, or to a named one (see `scalewise history`/`status`).

    Args:
        workload: Name of a declared workload.
        to_revision: Revision number to return to (default: the previous one).
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        timeout_s: Bounded wait, seconds.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        record.before = snapshot(state)
        revisions = list_revisions(spec)
        if to_revision is not None:
            chosen = next((r for r in revisions if r.number == to_revision), None)
            if chosen is None:
                known = ", ".join(str(r.number) for r in revisions) or "none"
                raise PermanentError(f"{spec.name} has no revision {to_revision} (known: {known})")
        else:
            older = [r for r in revisions if r.number < state.revision and r.image != state.image]
            if not older:
                raise PermanentError(f"{spec.name} has no earlier revision to roll back to")
            chosen = older[-1]
        record.plan = [f"roll back from revision {state.revision} ({state.image}) to {chosen.number} ({chosen.image})"]
        record.reason_code = "rollback"
        if record.dry_run:
            record.after = Snapshot(replicas=state.desired_replicas, image=chosen.image)
            return
        begin(record)
        t0 = time.monotonic()
        outcome = apply_rollback(spec, to_revision)
        timed(record, "write_s", t0)
        if not outcome.changed:
            record.outcome = "noop"
        t1 = time.monotonic()
        result = wait_until_ready(spec, timeout_s)
        timed(record, "wait_s", t1)
        record.after = snapshot(result.state)
        if not result.converged:
            raise ConvergenceTimeout(f"{spec.name}: rollback not ready after {timeout_s:.0f}s ({result.reason})")

    return run_action("rollback", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
