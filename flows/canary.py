from __future__ import annotations

from prefect import flow

from flows.canary_steps import ApprovalWait, Steps, note, steps_of, walk
from flows.common import begin, require_state, run_action, snapshot, wait_recorded
from flows.params import Image, Reason, WorkloadName
from scalewise.audit import ActionRecord, Trigger
from scalewise.errors import AnalysisFailed, CanaryFailed, PermanentError, RolloutFailed
from scalewise.policy.canary import plan_canary
from scalewise.revisions import render_template
from scalewise.spec import WorkloadSpec
from tasks.canary import abort, promote, running_again


@flow(name="canary", flow_run_name="canary-{workload}-{image}", validate_parameters=True)
def canary(
    workload: WorkloadName,
    image: Image,
    steps: Steps = None,
    reason: Reason = "canary",
    dry_run: bool = False,
    approval_timeout_s: ApprovalWait = 3600,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Canary a new image: walk the steps (set weight, pause, analysis), then promote; a failed
    analysis, a rejection or an unready canary aborts it (canary removed, stable untouched; Failed).

    Args:
        workload: Name of a declared workload.
        image: The new image.
        steps: The steps (default: the workload's update.steps).
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        approval_timeout_s: How long a pause for approval may wait, seconds; then the canary aborts.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """

    def body(spec: WorkloadSpec, record: ActionRecord) -> None:
        walked = steps_of(spec, steps)
        state = require_state(spec)
        target = spec.with_image(image)
        if state.image == image and render_template(target) == render_template(spec):
            raise PermanentError(f"{spec.name}: already runs {image}; nothing to canary")
        record.before = snapshot(state)
        record.plan = plan_canary(walked, state.desired_replicas, state.image, image)
        if record.dry_run:
            return
        begin(record)
        try:
            walk(spec, target, walked, record, approval_timeout_s)
            note(record, f"promote: roll the stable to {image}")
            promote(spec)
        except (AnalysisFailed, CanaryFailed, RolloutFailed) as exc:
            running_again()  # an approval that timed out left the run Paused
            after = abort(spec)
            note(record, f"aborted: canary removed; stable {after.ready_replicas}/{after.desired_replicas}"
                         f" ready on {after.image} (revision {after.revision}): {exc}")
            record.after, record.reason_code = snapshot(after), "canary_aborted"
            raise
        wait_recorded(spec, record, spec.update.timeout, lambda r: f"promoted but not ready: {r.reason}")
        record.reason_code = "canary_promoted"

    return run_action("canary", workload, body, reason=reason, dry_run=dry_run, trigger=trigger)
