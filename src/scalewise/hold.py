"""Who owns the replica count: a manual scale on an autoscaled workload pins it for a while.

Semantics (between the anchors: ``kubectl scale`` is overwritten by the HPA at its next sync, KEDA's
``paused-replicas`` pins until removed, AWS keeps a manual desired capacity until a policy fires):
a manual ``scale``/``scale-out``/``scale-in`` of a workload that has an ``autoscaling`` section pins
the count it set for a stated hold time (``--hold 10m``; default ``autoscaling.manual_hold``,
10 minutes). While the hold lasts the autoscaler leaves the workload alone and records
``manual_hold`` as its reason; when it ends, the autoscaler owns the count again. ``--hold 0``
takes no hold (and ends one): the autoscaler may change the count at its next evaluation, like the
HPA. Rollouts and rollbacks keep the replica count and take no hold; ``deploy`` (GitOps) keeps the
current count of an existing workload. A newer manual scale replaces the hold.

Pure data; the Prefect layer stores a hold in a Variable ``scalewise-hold-<workload>`` next to the
policy state (``scalewise-policy-<workload>``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

HOLD_VARIABLE_PREFIX = "scalewise-hold-"
REASON = "manual_hold"


class ManualHold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(ge=0)
    until: datetime
    by: str = Field(default="", max_length=200, description="Who scaled (trigger label)")
    operation: str = ""
    action_id: str | None = None

    def active(self, now: datetime) -> bool:
        return now < self.until

    def sentence(self, workload: str) -> str:
        return f"autoscaler will leave {workload} at {self.replicas} until {self.until:%H:%M:%S} UTC"


def hold_variable(workload: str) -> str:
    return f"{HOLD_VARIABLE_PREFIX}{workload}"


def make_hold(
    replicas: int, seconds: float, now: datetime, by: str = "", operation: str = "", action_id: str | None = None
) -> ManualHold:
    return ManualHold(
        replicas=replicas, until=now + timedelta(seconds=seconds), by=by, operation=operation, action_id=action_id
    )
