from __future__ import annotations

from prefect import flow

from flows.common import begin, require_state, run_action, snapshot, wait_recorded
from flows.params import Reason, WorkloadName
from scalewise.audit import ActionRecord, Trigger
from scalewise.errors import PermanentError
from scalewise.spec import WorkloadSpec
from tasks.canary import promote as promote_canary
from tasks.canary import read_canary


@flow(name="promote", flow_run_name="promote-{workload}", validate_parameters=True)
def promote(
    workload: WorkloadName, reason: Reason = "promote", dry_run: bool = False, trigger: Trigger | None = None
) -> ActionRecord:
    """Promote a workload's canary now: roll the stable to the canary's spec, then remove the canary.

    Args:
        workload: Name of a declared workload.
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        found = read_canary(spec)
        if found is None:
            raise PermanentError(f"{spec.name}: no canary to promote (scalewise canary {spec.name} IMAGE starts one)")
        record.before = snapshot(state)
        record.plan = [f"{found.summary()}: roll the {state.desired_replicas} stable replicas"
                       f" from {state.image} to {found.image}, then remove the canary"]
        record.reason_code = "canary_promoted"
        if record.dry_run:
            return
        begin(record)
        promote_canary(spec)
        wait_recorded(spec, record, spec.update.timeout, lambda r: f"promoted but not ready: {r.reason}")

    return run_action("promote", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
