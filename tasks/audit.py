"""Recording actions: a table artifact for people (Prefect UI) and an event for automations/history."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.events import emit_event

from scalewise import history
from scalewise.audit import OPEN_OUTCOMES, ActionRecord, Trigger, artifact_key, event_name, workload_resource_id


def resolve_trigger(trigger: Trigger | None) -> Trigger:
    """The caller's explicit trigger, or one derived from the flow run.

    The OSS server records no user and leaves ``created_by`` empty for API/CLI/UI runs, so callers
    that know who they are (CLI, webhook, autoscaler) pass a trigger; otherwise scheduled runs are
    ``schedule``, runs created by an automation ``automation``, other deployment runs ``ui``.
    """
    if trigger is not None:
        return trigger
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return Trigger(kind="api")
    if run.auto_scheduled:
        return Trigger(kind="schedule", detail=str(run.deployment_id) if run.deployment_id else None)
    created = run.created_by
    if created is not None and (created.type or "").upper() == "AUTOMATION":
        return Trigger(kind="automation", actor=created.display_value or str(created.id))
    if run.deployment_id is not None:
        return Trigger(kind="ui", detail="deployment run (Prefect UI or API)")
    return Trigger(kind="api")


def current_flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_action(record: ActionRecord) -> ActionRecord:
    """Store the record as an artifact keyed by workload and emit it as an event."""
    create_table_artifact(
        table=[record.row()],
        key=artifact_key(record.workload),
        description=f"{record.operation} {record.workload}: {record.outcome} ({record.trigger.label()})",
    )
    related = []
    if record.flow_run_id:
        related.append(
            {"prefect.resource.id": f"prefect.flow-run.{record.flow_run_id}", "prefect.resource.role": "flow-run"}
        )
    emit_event(
        event=event_name(record),
        resource={
            "prefect.resource.id": workload_resource_id(record.workload),
            "prefect.resource.name": record.workload,
            "scalewise.target": record.target,
            "scalewise.trigger": record.trigger.kind,
        },
        related=related,
        payload=record.model_dump(mode="json"),
    )
    get_run_logger().info(
        "recorded %s of %s by %s: %s", record.operation, record.workload, record.trigger.label(), record.outcome
    )
    return record


def interrupted_records(workload: str, exclude_run: str | None = None) -> list[ActionRecord]:
    """Records of ``workload`` still ``in_progress`` (latest version) that belong to another run.

    Called under the workload's lock, so their process is no longer running them. A failure to read
    is logged and treated as none found (it must not stop the operation)."""
    try:
        found = history.recent(workload)
    except Exception as exc:
        get_run_logger().warning("could not read recent records of %s: %s: %s", workload, type(exc).__name__, exc)
        return []
    return [
        r for r in found
        if r.outcome in OPEN_OUTCOMES and not r.dry_run and (exclude_run is None or r.flow_run_id != exclude_run)
    ]
