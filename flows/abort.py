from __future__ import annotations

from prefect import flow

from flows.common import begin, require_state, run_action, snapshot
from flows.params import Reason, WorkloadName
from scalewise.audit import ActionRecord, Trigger
from scalewise.spec import WorkloadSpec
from tasks.canary import abort as abort_canary
from tasks.canary import read_canary


@flow(name="abort", flow_run_name="abort-{workload}", validate_parameters=True)
def abort(
    workload: WorkloadName, reason: Reason = "abort", dry_run: bool = False, trigger: Trigger | None = None
) -> ActionRecord:
    """Abort a workload's canary: remove the canary's replicas; the stable is not touched.

    A running canary flow holds the workload's lock: reject its approval (or cancel its run) to stop
    it; this removes a canary left behind. No canary: the run ends Completed with outcome noop.

    Args:
        workload: Name of a declared workload.
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        found = read_canary(spec)
        record.before = snapshot(state)
        record.after = record.before
        if found is None:
            record.plan, record.reason_code, record.outcome = ["no canary: nothing to remove"], "no_change", "noop"
            return
        record.plan = [f"remove the {found.summary()}; the stable stays {state.desired_replicas} x {state.image}"]
        record.reason_code = "canary_aborted"
        if record.dry_run:
            return
        begin(record)
        record.after = snapshot(abort_canary(spec))

    return run_action("abort", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
