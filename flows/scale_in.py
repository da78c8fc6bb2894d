from __future__ import annotations

from prefect import flow

from flows.common import run_action
from flows.params import HoldSeconds, MaxAge, ObservedAt, Reason, Step, Timeout, WorkloadName
from flows.scaling import scale_body
from scalewise.audit import ActionRecord, Trigger


@flow(name="scale-in", flow_run_name="scale-in-{workload}-by-{by}", validate_parameters=True)
def scale_in(
    workload: WorkloadName,
    by: Step = 1,
    reason: Reason = "manual scale-in",
    dry_run: bool = False,
    wait: bool = True,
    timeout_s: Timeout = 120.0,
    trigger: Trigger | None = None,
    observed_at: ObservedAt = None,
    max_observation_age_s: MaxAge = None,
    hold_s: HoldSeconds = None,
) -> ActionRecord:
    """Scale a workload in by a step, bounded by its min/max.

    Args:
        workload: Name of a declared workload.
        by: Replicas to remove.
        reason: Why; recorded in the audit trail.
        dry_run: Compute and record the plan without writing.
        wait: Wait until the new count is ready.
        timeout_s: Bounded wait, seconds.
        trigger: Who started this (filled in by the CLI, webhook and autoscaler).
        observed_at: Time of the observation that caused this run, if any.
        max_observation_age_s: Refuse to act on an observation older than this.
        hold_s: On an autoscaled workload, pin the count this long (default: autoscaling.manual_hold; 0: no hold).
    """
    return run_action(
        "scale-in", workload, scale_body("in", by, wait, timeout_s, hold_s), reason=reason, dry_run=dry_run,
        trigger=trigger, observed_at=observed_at, max_observation_age_s=max_observation_age_s,
    )
