from __future__ import annotations

import time

from prefect import flow

from flows.common import begin, require_state, run_action, snapshot, timed, wait_recorded
from flows.params import Reason, Timeout, WorkloadName
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.revisions import plan_rollback
from scalewise.spec import WorkloadSpec
from tasks.workload import apply_rollback, list_revisions


@flow(name="rollback", flow_run_name="rollback-{workload}", validate_parameters=True)
def rollback(
    workload: WorkloadName,
    to_revision: int | None = None,
    reason: Reason = "rollback",
    dry_run: bool = False,
    timeout_s: Timeout = 180.0,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Restore the whole spec of an earlier revision (see `scalewise history`/`status`).

    Args:
        workload: Name of a declared workload.
        to_revision: Revision to return to (default: the newest earlier one whose spec differs).
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        timeout_s: Bounded wait, seconds.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        record.before = snapshot(state)
        plan = plan_rollback(state, list_revisions(spec), to_revision)  # fails with the reason
        record.plan, record.reason_code = plan.describe(), "rollback"
        if record.dry_run:
            record.after = Snapshot(replicas=state.desired_replicas, image=plan.target.image)
            return
        begin(record)
        t0 = time.monotonic()
        apply_rollback(spec, plan)
        timed(record, "write_s", t0)
        wait_recorded(
            spec, record, timeout_s, lambda r: f"{spec.name}: rollback not ready after {timeout_s:.0f}s ({r.reason})"
        )

    return run_action("rollback", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
