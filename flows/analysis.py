"""Analyse a workload with Prometheus metrics (Argo Rollouts' semantics); Inconclusive asks a person.

Changes nothing on the workload and takes no lock: it is the gate a canary step calls, and a runbook
check on its own (its steps, :func:`gate` among them, are in ``flows/analysis_steps.py``). While it
runs, the measurements so far are the table artifact ``scalewise-analysis-<workload>``; at the end,
the action record (``scalewise history``) holds every measurement, the verdict and, if one was asked
for, the approval.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from flows.analysis_steps import analysis_record, finish, gate, start_record
from flows.params import Reason, WorkloadName
from scalewise.audit import ActionRecord, Trigger
from scalewise.policy.analysis import AnalysisSpec
from tasks.audit import record_action
from tasks.workload import load_workload

__all__ = ["analysis_record", "analyze", "gate"]

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
    record = start_record(spec, analysis, reason, trigger)
    try:
        gate(spec, analysis, record, on_inconclusive=on_inconclusive, approval_timeout_s=approval_timeout_s,
             duration_s=duration_s)
    except Exception as exc:
        record.outcome = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        finish(record, t0)
        # a plain call: after a pause timed out the run is still Paused, where Prefect refuses task runs
        record_action.fn(record)
        raise
    finish(record, t0)
    return record_action(record)
