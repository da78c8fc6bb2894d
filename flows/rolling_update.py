from __future__ import annotations

import time

from prefect import flow

from flows.common import begin, require_state, run_action, snapshot, timed
from flows.params import Image, Reason, Timeout, WorkloadName
from scalewise.audit import ActionRecord, Snapshot, Trigger
from scalewise.spec import WorkloadSpec
from tasks.workload import apply_image


@flow(name="rolling-update", flow_run_name="rolling-update-{workload}-{image}", validate_parameters=True)
def rolling_update(
    workload: WorkloadName,
    image: Image,
    reason: Reason = "rolling update",
    dry_run: bool = False,
    timeout_s: Timeout | None = None,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Roll out a new image with the workload's update strategy; on failure roll back automatically
    (the run then ends Failed with the reason).

    Args:
        workload: Name of a declared workload.
        image: The new image.
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        timeout_s: Bounded wait for the rollout (default: the spec's update.timeout).
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        state = require_state(spec)
        record.before = snapshot(state)
        u = spec.update
        record.plan = [
            f"image {state.image} -> {image} on {state.desired_replicas} replicas "
            f"({u.order}, parallelism {u.parallelism}, max surge {u.max_surge}, max unavailable "
            f"{u.max_unavailable}, monitor {u.monitor:g}s, on failure: roll back)"
        ]
        record.reason_code = "no_change" if state.image == image else "image_update"
        if record.dry_run:
            record.after = Snapshot(
                replicas=state.desired_replicas, image=image,
                revision=state.revision + (0 if state.image == image else 1),
            )
            return
        begin(record)
        t0 = time.monotonic()
        outcome, result = apply_image(spec, image, timeout_s or spec.update.timeout)
        timed(record, "rollout_s", t0)
        record.after = snapshot(result.state)
        if not outcome.changed:
            record.outcome = "noop"

    return run_action("rolling-update", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
