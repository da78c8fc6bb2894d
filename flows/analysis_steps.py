"""The steps of the ``analysis`` flow (``flows/analysis.py``): the gate any flow calls (measure, record
the verdict, ask a person when Inconclusive) and what the action record keeps of a run."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from scalewise.audit import ActionRecord, Approval, Trigger
from scalewise.errors import AnalysisFailed
from scalewise.metrics.base import WorkloadRef
from scalewise.policy.analysis import AnalysisRun, AnalysisSpec, Phase, summary_rows
from scalewise.spec import WorkloadSpec
from tasks.analysis import publish_analysis, run_analysis
from tasks.approval import request_approval
from tasks.audit import current_flow_run_id, resolve_trigger


def start_record(spec: WorkloadSpec, analysis: AnalysisSpec, reason: str, trigger: Trigger | None) -> ActionRecord:
    """The action record of an analysis run, its plan one line per metric."""
    return ActionRecord(
        operation="analysis", workload=spec.name, target=spec.target, trigger=resolve_trigger(trigger),
        reason=reason, started_at=datetime.now(UTC), config_version=spec.spec_hash(),
        flow_run_id=current_flow_run_id(),
        plan=[_describe(m) for m in analysis.model_dump()["metrics"]],
    )


def gate(
    spec: WorkloadSpec,
    analysis: AnalysisSpec,
    record: ActionRecord,
    *,
    on_inconclusive: Literal["approve", "fail"] = "approve",
    approval_timeout_s: int = 3600,
    duration_s: float = 600.0,
) -> AnalysisRun:
    """The analysis step of any flow (``analysis``, a canary's): measure, record the verdict and every
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


def finish(record: ActionRecord, t0: float) -> None:
    record.finished_at = datetime.now(UTC)
    record.durations["total_s"] = round(time.monotonic() - t0, 3)
