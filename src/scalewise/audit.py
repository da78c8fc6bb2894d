"""Action records: who/what changed which workload, when, why, from what to what.

Pure data and rendering; the Prefect layer stores each record as a table artifact (for people, in the
UI) and an event (for automations and for ``scalewise history``).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TriggerKind = Literal["schedule", "ui", "api", "webhook", "cli", "automation", "autoscaler"]
Outcome = Literal["succeeded", "failed", "noop", "planned", "rolled_back", "in_progress", "interrupted"]
#: ``in_progress``: written just before the first write to the workload and replaced (same ``id``,
#: a newer artifact version) by the final outcome. A record still ``in_progress`` when the next
#: operation on the workload holds its lock belongs to a process that died: that operation records
#: it again as ``interrupted`` (and re-reads the workload, completing or repairing the change).
OPEN_OUTCOMES = frozenset({"in_progress"})
Operation = Literal[
    "deploy", "scale", "scale-out", "scale-in", "rolling-update", "rollback", "autoscale", "remove", "analysis",
    "canary", "promote", "abort",
]

ARTIFACT_PREFIX = "scalewise-action-"
EVENT_PREFIX = "scalewise.action"


class Trigger(BaseModel):
    """Who or what started an action. The OSS Prefect server records no user, so it is carried here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TriggerKind = Field(description="schedule, ui, api, webhook, cli, automation or autoscaler")
    actor: str | None = Field(default=None, max_length=200, description="User, caller or automation id")
    detail: str | None = Field(default=None, max_length=500, description="Alert name, event id, ...")

    def label(self) -> str:
        return f"{self.kind}:{self.actor}" if self.actor else self.kind


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    replicas: int | None = None
    ready: int | None = None
    image: str | None = None
    revision: int | None = None


class Approval(BaseModel):
    """A person's answer to a paused run (Prefect's Resume form, ``scalewise approve``)."""

    model_config = ConfigDict(frozen=True)

    approved: bool
    approver: str | None = Field(default=None, max_length=200, description="Who answered (as they gave it)")
    comment: str = Field(default="", max_length=2000)
    at: datetime
    timed_out: bool = Field(default=False, description="Nobody answered in time: the run aborted")


class ActionRecord(BaseModel):
    """One action (or dry-run plan) on one workload."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    operation: Operation
    workload: str
    target: str
    trigger: Trigger
    reason: str = ""
    reason_code: str = ""
    dry_run: bool = False
    outcome: Outcome = "succeeded"
    plan: list[str] = Field(default_factory=list, description="What was (or would be) done, in order")
    before: Snapshot = Field(default_factory=Snapshot)
    after: Snapshot = Field(default_factory=Snapshot)
    error: str | None = None
    config_version: str | None = None
    observed_at: datetime | None = None
    started_at: datetime
    finished_at: datetime | None = None
    durations: dict[str, float] = Field(default_factory=dict)
    flow_run_id: str | None = None
    decision: dict[str, Any] | None = Field(default=None, description="Autoscaler decision record")
    analysis: dict[str, Any] | None = Field(
        default=None, description="Analysis run: phase, message, every measurement (scalewise.policy.analysis)"
    )
    approval: Approval | None = Field(default=None, description="Manual approval asked for and its answer")

    def row(self) -> dict[str, Any]:
        """A flat row for a table artifact (the full record rides along as JSON)."""
        return {
            "time": self.started_at.isoformat(),
            "workload": self.workload,
            "operation": self.operation,
            "trigger": self.trigger.label(),
            "before": _snap(self.before),
            "after": _snap(self.after),
            "reason": self.reason,
            "outcome": self.outcome,
            "dry_run": self.dry_run,
            "duration_s": round(self.durations.get("total_s", 0.0), 3),
            "record": self.model_dump_json(),
        }


def _snap(s: Snapshot) -> str:
    if s.replicas is None and s.image is None:
        return "-"
    rev = f" r{s.revision}" if s.revision is not None else ""
    return f"{s.replicas} x {s.image}{rev}"


def artifact_key(workload: str) -> str:
    """Prefect artifact keys accept only ``[a-z0-9-]``; a bad key fails the whole run."""
    slug = re.sub(r"[^a-z0-9-]+", "-", workload.lower()).strip("-") or "unnamed"
    return (ARTIFACT_PREFIX + slug)[:100]


def event_name(record: ActionRecord) -> str:
    return f"{EVENT_PREFIX}.{record.operation}.{record.outcome}"


def workload_resource_id(workload: str) -> str:
    return f"scalewise.workload.{workload}"
