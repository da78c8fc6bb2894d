from __future__ import annotations

import time

from prefect import flow

from flows.common import begin, run_action, snapshot, timed, wait_recorded
from flows.params import Image, Reason, Timeout, WorkloadName
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.operations import check_replicas
from scalewise.spec import WorkloadSpec
from tasks.locking import ensure_lock
from tasks.workload import apply_spec, read_state


@flow(name="deploy", flow_run_name="deploy-{workload}", validate_parameters=True)
def deploy(
    workload: WorkloadName,
    replicas: int | None = None,
    image: Image | None = None,
    reason: Reason = "deploy",
    dry_run: bool = False,
    wait: bool = True,
    timeout_s: Timeout = 180.0,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Create a declared workload on its target, or bring it in line with its spec (repeatable).

    Args:
        workload: Name of a declared workload.
        replicas: Replica count (default: keep the current count, or the spec's initial count on create).
        image: Image override (default: the spec's image).
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        wait: Wait until every replica is ready.
        timeout_s: Bounded wait, seconds.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        if replicas is not None:
            check_replicas(spec, replicas)
        state = read_state(spec)
        record.before = snapshot(state)
        count = replicas if replicas is not None else (state.desired_replicas if state else spec.replicas.start)
        verb = "create" if state is None else "update"
        record.plan = [f"{verb} {spec.target} workload {spec.name}: {count} x {spec.image}"]
        record.reason_code = verb
        if record.dry_run:
            record.after = Snapshot(replicas=count, image=spec.image)
            return
        ensure_lock(spec.name)
        begin(record)
        t0 = time.monotonic()
        after = apply_spec(spec, count)
        timed(record, "write_s", t0)
        record.after = snapshot(after)
        if wait:
            wait_recorded(
                spec, record, timeout_s, lambda r: f"{spec.name} not ready after {timeout_s:.0f}s ({r.reason})"
            )

    return run_action("deploy", workload, body, reason=reason, dry_run=dry_run, trigger=trigger, image=image)
