"""The canary's steps (``flows/canary.py`` reads as the runbook; this is how each step is done).

Each step is a task run (``set-weight-N``, ``pause-Ns``, the analysis' measurements) or a Prefect
pause (``pause: {}``: approve or reject in the UI, or ``scalewise approve RUN``), and each lands in
the action record as a timed plan line; the record is stored ``in_progress`` after every step, so
``scalewise history`` shows how far a running canary got.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from flows.analysis import gate
from scalewise.audit import ActionRecord, Approval
from scalewise.errors import CanaryFailed, SpecError
from scalewise.policy.canary import CanaryStep, check_steps
from scalewise.spec import WorkloadSpec
from tasks.approval import request_approval
from tasks.audit import record_action
from tasks.canary import pause_for, set_weight

Steps = Annotated[
    list[CanaryStep] | None,
    AfterValidator(lambda steps: None if steps is None else check_steps(steps)),
    Field(description="The steps (default: the workload's update.steps): set_weight, pause, analysis"),
]
ApprovalWait = Annotated[
    int, Field(ge=1, le=7 * 86400, description="How long an approval may wait, seconds; then the canary aborts")
]


def steps_of(spec: WorkloadSpec, steps: list[CanaryStep] | None) -> list[CanaryStep]:
    """The steps to walk: the parameter's, else the spec's; SpecError naming the field when none."""
    if steps:
        return steps
    if spec.update.strategy != "canary":
        raise SpecError(
            "parameter", "steps",
            f"workload {spec.name!r} declares no canary (update.strategy is {spec.update.strategy});"
            " declare update.strategy: canary with steps, or pass steps",
        )
    return list(spec.update.steps)


def note(record: ActionRecord, line: str) -> None:
    record.plan.append(f"{datetime.now(UTC):%H:%M:%S} {line}")


def answered(approval: Approval) -> str:
    if approval.timed_out:
        return f"approval: {approval.comment}"
    comment = f": {approval.comment}" if approval.comment else ""
    return f"{'approved' if approval.approved else 'rejected'} by {approval.approver or 'an unnamed approver'}{comment}"


def walk(
    spec: WorkloadSpec, canary: WorkloadSpec, steps: list[CanaryStep], record: ActionRecord, approval_timeout_s: int
) -> None:
    """Walk ``steps`` in order; raises CanaryFailed (rejected, unready) or AnalysisFailed to abort."""
    for i, step in enumerate(steps, 1):
        if step.set_weight is not None:
            state = set_weight(spec, canary, step.set_weight)
            note(record, f"step {i}: weight {step.set_weight}%: {state.ready_replicas}/{state.desired_replicas}"
                         f" canary replicas of {canary.image} ready")
        elif step.pause is not None and step.pause.duration:
            pause_for(step.pause.duration)
            note(record, f"step {i}: paused {step.pause.duration:g}s")
        elif step.pause is not None:
            question = f"canary of {spec.name} ({canary.image}) at step {i} of {len(steps)}: go on?"
            approval = request_approval(question, approval_timeout_s, record.flow_run_id)
            record.approval = approval
            note(record, f"step {i}: {answered(approval)}")
            if not approval.approved:
                raise CanaryFailed(spec.name, f"step {i}: {answered(approval)}")
        else:
            assert step.analysis is not None
            note(record, f"step {i}: analysis")
            gate(spec, step.analysis, record, approval_timeout_s=approval_timeout_s)
        record_action(record.model_copy(update={"outcome": "in_progress"}, deep=True))
