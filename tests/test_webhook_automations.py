"""The automations declared in deployments/automations.yaml, end to end on a real Prefect server:
applied idempotently by name, and each one, when its event is emitted, creates a flow run whose
templated parameters are valid for the flow (types checked by the flow's own validation)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.events import emit_event

from deployments import apply_automations
from flows.scale import scale
from flows.scale_in import scale_in
from flows.scale_out import scale_out
from scalewise.audit import Trigger, workload_resource_id
from scalewise.local import LocalServer
from tests.support.webhook_env import TEST_SUFFIX

pytestmark = pytest.mark.prefect


FLOWS = {"scale-out": scale_out, "scale-in": scale_in, "scale": scale}


@pytest.fixture(scope="module")
def applied(prefect_server: LocalServer, webhook_deployments: list[str]) -> Iterator[list[dict[str, Any]]]:
    items = apply_automations.load()
    report = asyncio.run(apply_automations.apply(items, suffix=TEST_SUFFIX))
    assert sorted(report["created"]) == sorted(i["name"] for i in items), report
    try:
        yield items
    finally:
        async def delete() -> None:
            async with get_client() as client:
                for item in items:
                    for a in await client.read_automations_by_name(item["name"]):
                        await client.delete_automation(a.id)

        asyncio.run(delete())


def test_apply_is_idempotent_and_updates_by_name(applied: list[dict[str, Any]]) -> None:
    again = asyncio.run(apply_automations.apply(applied, suffix=TEST_SUFFIX))
    assert again["created"] == [] and again["updated"] == [] and again["deleted"] == [], again
    assert sorted(again["unchanged"]) == sorted(i["name"] for i in applied)
    changed = [dict(applied[0], description="changed"), *applied[1:]]
    report = asyncio.run(apply_automations.apply(changed, suffix=TEST_SUFFIX))
    assert report["updated"] == [applied[0]["name"]], report
    report = asyncio.run(apply_automations.apply(applied, suffix=TEST_SUFFIX))
    assert report["updated"] == [applied[0]["name"]]

    async def count() -> dict[str, int]:
        async with get_client() as client:
            return {i["name"]: len(await client.read_automations_by_name(i["name"])) for i in applied}

    assert set(asyncio.run(count()).values()) == {1}


def _deployment_id(flow: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{flow}/{TEST_SUFFIX}").id


def _runs_of(deployment_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(),
        ))


@pytest.mark.parametrize(
    ("action", "payload", "expected"),
    [
        ("scale-out", {"by": 2}, {"by": 2}),
        ("scale-out", {}, {"by": 1}),
        ("scale-in", {"by": 3}, {"by": 3}),
        ("scale", {"replicas": 4}, {"replicas": 4}),
    ],
)
def test_event_starts_a_run_with_valid_parameters(
    applied: list[dict[str, Any]], action: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    workload = f"ev-{uuid.uuid4().hex[:8]}"
    dep = _deployment_id(action)
    before = {r.id for r in _runs_of(dep)}
    event = emit_event(
        event=f"scalewise.webhook.{action}",
        resource={"prefect.resource.id": workload_resource_id(workload), "prefect.resource.name": workload},
        payload=payload,
    )
    assert event is not None
    deadline = time.monotonic() + 60
    new: list[Any] = []
    while time.monotonic() < deadline and not new:
        new = [r for r in _runs_of(dep) if r.id not in before and r.parameters.get("workload") == workload]
        time.sleep(0.5)
    assert len(new) == 1, f"no run of {action}/{TEST_SUFFIX} for {workload} within 60s"
    params = new[0].parameters
    for key, value in expected.items():
        assert params[key] == value and type(params[key]) is int, params
    assert params["trigger"] == {
        "kind": "automation", "actor": f"scalewise-webhook-{action}", "detail": f"event {event.id}"
    }
    assert params["reason"] == f"{action} requested by event scalewise.webhook.{action}"
    # the flow's own validation accepts the templated parameters (right names and types)
    validated = FLOWS[action].validate_parameters(params)
    assert validated["workload"] == workload and isinstance(validated["trigger"], Trigger)
    assert validated["observed_at"].timestamp() == pytest.approx(event.occurred.timestamp(), abs=1)
    assert validated["max_observation_age_s"] == 300


def test_other_events_start_nothing(applied: list[dict[str, Any]]) -> None:
    workload = f"ev-{uuid.uuid4().hex[:8]}"
    deps = [_deployment_id(a) for a in FLOWS]
    before = sum(len(_runs_of(d)) for d in deps)
    emit_event(event="scalewise.webhook.explode",
               resource={"prefect.resource.id": workload_resource_id(workload), "prefect.resource.name": workload})
    emit_event(event="scalewise.webhook.scale-out",
               resource={"prefect.resource.id": f"other.thing.{workload}", "prefect.resource.name": workload})
    time.sleep(5)
    assert sum(len(_runs_of(d)) for d in deps) == before
