"""``autoscale``: evaluate the autoscaling policy of each configured workload and apply its decision.

The steps per workload (evaluate, plan or act under the lock, save the policy state) are in
``flows/autoscale_steps.py``; never scale in on a guess (errors and manual holds hold).

Three ways to run it: the ``autoscale/scalewise`` deployment on an interval schedule, the same
deployment started at once by a ``scalewise.threshold.crossed`` event (``scalewise watch``), and
``run_loop`` in ``flows/autoscale_loop.py`` (``scalewise autoscaler``), which evaluates in process
every tick and calls this flow in process for each workload whose replica count should change.

Scheduled runs always act, late or not, one run per backlog. A scheduled run reads its own metrics
when it starts, so its observation is always fresh, however late it starts: it is never refused for
lateness. A scheduled run that starts when another scheduled run already started evaluating after its
due time skips (ends Completed in a state named "Skipped", with the reason): the other run read
fresher metrics. Nothing is ever skipped for a run that has not started, so lateness cannot starve
the autoscaler; a backlog after an outage collapses into one acting run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import Field

from flows.autoscale_steps import evaluate_each, scheduled_run, select_workloads
from flows.params import ObservedAt, Reason, Timeout, WorkloadName
from scalewise.audit import Trigger
from scalewise.autoscaler import Result
from tasks.schedule import scheduled_claim

Workloads = Annotated[
    list[WorkloadName] | None,
    Field(description="Workloads to evaluate (default: every workload with autoscaling)"),
]
AutoscaleMaxAge = Annotated[
    float | None,
    Field(gt=0, description="Refuse to act on an observation older than this, seconds (None: no limit)"),
]


def _run_name() -> str:
    params: dict[str, Any] = dict(flow_run.parameters or {})
    names = params.get("workloads") or ["all"]
    tail = "-dry-run" if params.get("dry_run") else ""
    return ("autoscale-" + "-".join(str(n) for n in names))[:80] + tail


@flow(name="autoscale", flow_run_name=_run_name, validate_parameters=True)
def autoscale(
    workloads: Workloads = None,
    dry_run: bool = False,
    trigger: Trigger | None = None,
    observed_at: ObservedAt = None,
    max_observation_age_s: AutoscaleMaxAge = 60.0,
    reason: Reason = "autoscaler",
    wait: bool = False,
    timeout_s: Timeout = 120.0,
) -> list[Result] | State[Any]:
    """Evaluate the autoscaling policy of workloads and apply each decision that changes replicas.

    A run created by the deployment's schedule may instead end Completed in a state named
    "Skipped" when another scheduled run acts for it (a late backlog collapses into one run).

    Args:
        workloads: Workloads to evaluate; default every workload with an autoscaling section.
        dry_run: Record what would be done (an action record per workload); change and save nothing.
        trigger: Who started this (filled in by the CLI, the watcher's trigger and the autoscaler loop).
        observed_at: Time of the observation that caused this run, if any.
        max_observation_age_s: Refuse to act on an observation older than this (seconds).
        reason: Why; recorded with each action.
        wait: Wait until a new replica count is ready.
        timeout_s: Bounded wait, seconds.
    """
    logger = get_run_logger()
    scheduled = scheduled_run()
    if scheduled is not None:
        why = scheduled_claim(scheduled.run_id, scheduled.deployment_id, scheduled.expected)
        if why is not None:
            logger.info("skipped: %s", why)
            return Completed(name="Skipped", message=why, data=[])
        # a scheduled run observes when it starts (its readings are its own): fresh, however late
        observed_at = datetime.now(UTC)
    chosen, results = select_workloads(workloads, logger)
    return results + evaluate_each(
        chosen, logger, dry_run=dry_run, trigger=trigger, observed_at=observed_at,
        max_observation_age_s=max_observation_age_s, reason=reason, wait=wait, timeout_s=timeout_s,
    )
