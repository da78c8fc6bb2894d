"""Asking a person: the flow run pauses with Prefect's ``pause_flow_run(wait_for_input=...)`` until
someone answers the Resume form (Prefect UI) or runs ``scalewise approve RUN``; a timeout aborts."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from scalewise.approval import ApprovalInput
from scalewise.audit import Approval


def request_approval(question: str, timeout_s: int, run_id: str | None, poll_s: int = 2) -> Approval:
    """Pause the current flow run until it is approved or rejected, or ``timeout_s`` passes (then the
    answer is a rejection marked ``timed_out``). Call it from a flow, not from a task."""
    hint = f"scalewise approve {run_id or 'RUN'} [--reject] --comment '...'"
    get_run_logger().warning("waiting for approval (up to %ds): %s -- answer in the Prefect UI or: %s",
                             timeout_s, question, hint)
    form = ApprovalInput.with_initial_data(
        description=f"**{question}**\n\nApprove to continue, reject to abort. Or from a shell: `{hint}`",
        approve=True,
    )
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s)
    except FlowPauseTimeout:
        return Approval(
            approved=False, timed_out=True, at=datetime.now(UTC),
            comment=f"nobody answered within {timeout_s}s: aborted",
        )
    return Approval(approved=answer.approve, approver=answer.approver, comment=answer.comment, at=datetime.now(UTC))
