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
    autoscaler. Runs of the deployment do not overlap (deployment concurrency limit 1, CANCEL_NEW,
    in prefect.yaml), so this read-then-write needs no lock.
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
