"""Deduplicating the scheduled runs of the ``autoscale`` deployment (see flows/autoscale.py).

The claim is a Prefect Variable per deployment, ``scalewise-autoscale-claim-<deployment id>``,
holding the scheduled run that last started evaluating and when.
"""

from __future__ import annotations

from datetime import UTC, datetime

CLAIM_PREFIX = "scalewise-autoscale-claim-"


def scheduled_claim(run_id: str, deployment_id: str, expected: datetime) -> str | None:
    """None when this scheduled run should act; else why it skips.

    It skips only when another scheduled run of the deployment *started evaluating after this one
    was due*: that run read fresher metrics than this one could have at its due time, so nothing is
    lost. A run is never skipped for a run that has not started, so lateness cannot starve the
    autoscaler. Two runs may overlap and both act: each acts on its own fresh readings, and the
    workload lock serialises their writes, the second deciding again on what the first did.
    """
    from prefect.variables import Variable

    name = CLAIM_PREFIX + deployment_id
    claim = Variable.get(name, default=None)
    started = claim.get("started") if isinstance(claim, dict) else None
    if isinstance(started, str) and datetime.fromisoformat(started) > expected:
        return (
            f"superseded: scheduled run {claim.get('run')} started evaluating at {started}, after this run was "
            f"due ({expected.isoformat()}), with fresher readings"
        )
    Variable.set(name, {"run": run_id, "started": datetime.now(UTC).isoformat()}, overwrite=True,
                 tags=["scalewise-policy"])
    return None


def collapse_backlog(deployment_name: str, now: datetime | None = None) -> list[str]:
    """Cancel the due scheduled runs of ``deployment_name`` but the newest, before a runner starts.

    After an outage of the runner, Prefect's scheduler has kept making runs (up to 100 ahead); a runner
    starting then would spawn one process per due run at once (``serve`` sets no process limit), each
    to skip by the claim rule. The newest due run reads the same fresh metrics as any of them would, so
    nothing is lost. Returns the cancelled run ids.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled

    now = now or datetime.now(UTC)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            return []
        due = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=now),  # type: ignore[arg-type]
            ),
            limit=200,  # the API maximum; more is more than the scheduler makes ahead
        )
        due = sorted((r for r in due if r.auto_scheduled), key=lambda r: r.expected_start_time or now)
        cancelled: list[str] = []
        for run in due[:-1]:
            message = f"superseded backlog: {len(due)} scheduled runs were due when the runner started; the newest acts"
            client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
            cancelled.append(str(run.id))
    return cancelled
