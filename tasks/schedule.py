"""Deduplicating the scheduled runs of the ``autoscale`` deployment (see flows/autoscale.py).

The claim is a Prefect Variable per deployment, ``scalewise-autoscale-claim-<deployment id>``,
holding the scheduled run that acts; it is read and changed only under a short lock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CLAIM_PREFIX = "scalewise-autoscale-claim-"


def _due_unfinished(deployment_id: str, now: datetime) -> list[Any]:
    """Scheduled runs of the deployment that are due (expected by ``now``) and not final, newest first."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(before_=now),  # type: ignore[arg-type]
                state=FlowRunFilterStateType(any_=live),  # type: ignore[arg-type]
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
    return [r for r in runs if r.auto_scheduled]


def _run_is_final(run_id: str) -> bool:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return True
    return run.state is None or run.state.is_final()


def scheduled_claim(run_id: str, deployment_id: str, expected: datetime) -> str | None:
    """None when this scheduled run should act; else why it skips (see the note above)."""
    from prefect.variables import Variable

    from tasks.locking import workload_lock

    name = CLAIM_PREFIX + deployment_id
    with workload_lock(f"autoscale-schedule-{deployment_id}", timeout_s=120):
        claim = Variable.get(name, default=None)
        winner = claim.get("run") if isinstance(claim, dict) else None
        if winner == run_id:
            return None
        if winner is not None and not _run_is_final(str(winner)):
            return f"superseded: scheduled run {winner} (due {claim.get('expected')}) acts on fresh readings"
        due = _due_unfinished(deployment_id, datetime.now(UTC))
        newest = due[0] if due else None
        if newest is None or str(newest.id) == run_id or newest.expected_start_time <= expected:
            Variable.set(name, {"run": run_id, "expected": expected.isoformat()}, overwrite=True,
                         tags=["scalewise-policy"])
            return None
        Variable.set(
            name, {"run": str(newest.id), "expected": newest.expected_start_time.isoformat()}, overwrite=True,
            tags=["scalewise-policy"],
        )
        return f"superseded: a newer scheduled run {newest.id} (due {newest.expected_start_time.isoformat()}) acts"


