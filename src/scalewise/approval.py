"""Manual approval through Prefect's own pause: the form a paused run asks for, and resuming it.

A flow pauses with ``pause_flow_run(wait_for_input=ApprovalInput...)`` (see ``tasks/approval.py``);
the Prefect UI shows the run as Paused with a Resume form built from :class:`ApprovalInput`
(approve or reject, a comment, who answers). ``scalewise approve RUN [--reject] --comment ...``
answers the same form through the API (:func:`resume`).
"""

from __future__ import annotations

import uuid

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from pydantic import Field, ValidationError

from scalewise.errors import ScalewiseError


class ApprovalInput(RunInput):
    """The Resume form of a paused scalewise run."""

    approve: bool = Field(default=True, description="Approve (true) or reject (false)")
    comment: str = Field(default="", max_length=2000, description="Why: recorded in the audit trail")
    approver: str | None = Field(
        default=None, max_length=200, description="Who answers (the OSS server records no user: give your name)"
    )


class ApprovalError(ScalewiseError):
    """The run cannot be answered (unknown, not paused, no longer resumable, bad input). ``kind`` says
    which for callers that map it (the webhook receiver's status codes): ``bad_input``, ``not_found``
    (no such run, or nothing of the workload is paused) or ``conflict`` (not paused any more, timed out,
    several paused runs)."""

    def __init__(self, message: str, kind: str = "conflict") -> None:
        super().__init__(message)
        self.kind = kind


def parse_run_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise ApprovalError(
            f"RUN: {value!r} is not a flow run id (a UUID, as printed by the paused run)", "bad_input"
        ) from None


def paused_run_of(workload: str) -> str:
    """The id of the one paused flow run acting on ``workload`` (its ``workload`` parameter).

    Raises ApprovalError when none is paused, or when several are (naming them: answer one by id).
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    if not workload.strip():
        raise ApprovalError("--workload: must not be empty", "bad_input")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            limit=200,
        )
    mine = [r for r in runs if (r.parameters or {}).get("workload") == workload]
    if not mine:
        raise ApprovalError(f"--workload: no run of workload {workload!r} is paused for approval", "not_found")
    if len(mine) > 1:
        listed = ", ".join(f"{r.name} ({r.id})" for r in mine)
        raise ApprovalError(f"--workload: {len(mine)} runs of {workload!r} are paused: {listed}; answer one by its id")
    return str(mine[0].id)


def resume(run_id: str, approve: bool, comment: str, approver: str | None, workload: str | None = None) -> str:
    """Answer the paused flow run ``run_id``; returns its name. Raises ApprovalError with the reason.
    With ``workload``, the run must be one acting on that workload (its ``workload`` parameter)."""
    rid = parse_run_id(run_id)
    try:
        answer = ApprovalInput(approve=approve, comment=comment, approver=approver)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApprovalError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", "bad_input") from None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(rid)
        except ObjectNotFound:
            raise ApprovalError(f"RUN: no flow run {rid}", "not_found") from None
    if workload is not None and (run.parameters or {}).get("workload") != workload:
        raise ApprovalError(f"RUN: flow run {run.name} ({rid}) is not a run of workload {workload!r}", "not_found")
    state = run.state
    if state is None or not state.is_paused():
        raise ApprovalError(
            f"RUN: flow run {run.name} ({rid}) is not paused (state: {state.name if state else 'none'}); "
            "nothing to approve"
        )
    try:
        resume_flow_run(rid, run_input=answer.model_dump(include={"approve", "comment", "approver"}))
    except FlowPauseTimeout:
        raise ApprovalError(
            f"RUN: flow run {run.name} ({rid}) can no longer be resumed (its pause timed out)"
        ) from None
    except RuntimeError as exc:
        raise ApprovalError(f"RUN: flow run {run.name} ({rid}): {exc}") from None
    return run.name
