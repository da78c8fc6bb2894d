"""Analyse a workload with Prometheus metrics (Argo Rollouts' semantics); Inconclusive asks a person.

Changes nothing on the workload and takes no lock: it is the gate a canary step calls, and a runbook
check on its own. While it runs, the measurements so far are the table artifact
``scalewise-analysis-<workload>``; at the end, the action record (``scalewise history``) holds
every measurement, the verdict and, if one was asked for, the approval.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from prefect import flow
from pydantic import Field

from flows.params import Reason, WorkloadName
from scalewise.audit import ActionRecord, Approval, Trigger
from scalewise.errors import AnalysisFailed
from scalewise.metrics.base import WorkloadRef
from scalewise.policy.analysis import AnalysisRun, AnalysisSpec, Phase, summary_rows
from scalewise.spec import WorkloadSpec
from tasks.analysis import publish_analysis, run_analysis
from tasks.approval import request_approval
from tasks.audit import current_flow_run_id, record_action, resolve_trigger
from tasks.workload import load_workload

ApprovalTimeout = Annotated[
    int, Field(ge=1, le=7 * 86400, description="How long an approval may wait, seconds; then the run aborts")
]
AnalysisDuration = Annotated[
    float, Field(gt=0, le=86400, description="How long metrics without a count run, seconds (then terminated)")
]


@flow(name="analysis", flow_run_name="analysis-{workload}", validate_parameters=True)
def analyze(
    workload: WorkloadName,
    analysis: AnalysisSpec,
    reason: Reason = "analysis",
    on_inconclusive: Literal["approve", "fail"] = "approve",
    approval_timeout_s: ApprovalTimeout = 3600,
    duration_s: AnalysisDuration = 600.0,
    trigger: Trigger | None = None,
) -> ActionRecord:
    """Measure a workload's metrics; Successful passes, Failed/Error fail, Inconclusive waits for approval.

    Args:
        workload: Name of a declared workload (its name, namespace and target fill the query templates).
        analysis: The metrics, their queries, conditions and limits.
        reason: Why; recorded in the audit trail.
        on_inconclusive: 'approve': pause for a person (Prefect UI Resume form or `scalewise approve`); 'fail'.
        approval_timeout_s: How long an approval may wait, seconds; then the run aborts.
        duration_s: How long metrics with an interval and no count are measured, seconds.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
    """
    t0 = time.monotonic()
    spec = load_workload(workload)
    record = ActionRecord(
        operation="analysis", workload=spec.name, target=spec.target, trigger=resolve_trigger(trigger),
        reason=reason, started_at=datetime.now(UTC), config_version=spec.spec_hash(),
        flow_run_id=current_flow_run_id(),
        plan=[_describe(m) for m in analysis.model_dump()["metrics"]],
    )
    try:
        gate(spec, analysis, record, on_inconclusive=on_inconclusive, approval_timeout_s=approval_timeout_s,
             duration_s=duration_s)
    except Exception as exc:
        record.outcome = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        _finish(record, t0)
        # a plain call: after a pause timed out the run is still Paused, where Prefect refuses task runs
        record_action.fn(record)
        raise
    _finish(record, t0)
    return record_action(record)


def gate(
    spec: WorkloadSpec,
    analysis: AnalysisSpec,
    record: ActionRecord,
    *,
    on_inconclusive: Literal["approve", "fail"] = "approve",
    approval_timeout_s: int = 3600,
    duration_s: float = 600.0,
) -> AnalysisRun:
    """The analysis step of any flow (this one, a canary's): measure, record the verdict and every
    measurement in ``record``; Inconclusive asks a person (when ``on_inconclusive`` is 'approve').

    Returns the run when it may go on (Successful, or Inconclusive and approved); raises AnalysisFailed
    with the reason otherwise (Failed, Error, Inconclusive rejected or unanswered), for the caller to
    abort or roll back. Call it from a flow (the approval pauses the flow run)."""
    run = run_analysis(
        analysis, WorkloadRef.of(spec), duration_s=duration_s,
        # the artifact is for watching; a failure to store it must not decide the analysis
        on_update=lambda r: publish_analysis(spec.name, r, return_state=True),
    )
    record.analysis = analysis_record(run)
    record.reason_code = f"analysis_{run.phase.value.lower()}"
    record.plan.append(f"analysis {run.phase}: {run.message}")
    if run.phase is Phase.INCONCLUSIVE and on_inconclusive == "approve":
        approval = request_approval(
            f"analysis of {spec.name} is Inconclusive: {run.message}", approval_timeout_s, record.flow_run_id
        )
        record.approval = approval
        record.plan.append(_answered(approval))
        if not approval.approved:
            raise AnalysisFailed(f"analysis of {spec.name!r}: {_answered(approval)}")
    elif run.phase is not Phase.SUCCESSFUL:
        raise AnalysisFailed(f"analysis of {spec.name!r} {run.phase}: {run.message}")
    return run


def analysis_record(run: AnalysisRun) -> dict[str, Any]:
    """What the action record keeps of a run: verdict, per-metric counters, every measurement."""
    return {
        "phase": str(run.phase),
        "message": run.message,
        "started_at": run.started_at.isoformat(),
        "metrics": [
            {
                "name": r.name, "phase": str(r.phase), "dry_run": r.dry_run, "count": r.count,
                "successful": r.successful, "failed": r.failed, "inconclusive": r.inconclusive,
                "error": r.error, "message": r.message,
            }
            for r in run.results
        ],
        "measurements": summary_rows(run),
    }


def _describe(metric: dict[str, Any]) -> str:
    when = f"every {metric['interval']:g}s" if metric["interval"] else "once"
    count = f" x{metric['count']}" if metric["count"] else ""
    dry = " (dry run)" if metric["dry_run"] else ""
    return (
        f"measure {metric['name']}{dry} {when}{count}: success {metric['success_condition'] or '-'}, "
        f"failure {metric['failure_condition'] or '-'} (failure_limit {metric['failure_limit']})"
    )


def _answered(approval: Approval) -> str:
    if approval.timed_out:
        return f"approval: {approval.comment}"
    verdict = "approved" if approval.approved else "rejected"
    comment = f": {approval.comment}" if approval.comment else ""
    return f"{verdict} by {approval.approver or 'an unnamed approver'}{comment}"


def _finish(record: ActionRecord, t0: float) -> None:
    record.finished_at = datetime.now(UTC)
    record.durations["total_s"] = round(time.monotonic() - t0, 3)
