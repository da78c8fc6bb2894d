"""Webhook request handling on a real uvicorn + real Prefect server (runs counted via the Prefect API)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalewise.webhook.auth import signed_headers
from tests.support.webhook_env import CREDENTIALS, TEST_SUFFIX, UvicornThread, base_config, count_runs, read_run

pytestmark = pytest.mark.prefect

OPS = {"Authorization": "Bearer ops-token-9876543210", "Content-Type": "application/json"}
AM = {"Authorization": "Bearer am-token-0123456789", "Content-Type": "application/json"}
SLOW = {"Authorization": "Bearer slow-token-111"}


def post(http: httpx.Client, path: str, data: Any, headers: dict[str, str] = OPS, **kw: Any) -> httpx.Response:
    return http.post(path, content=json.dumps(data).encode(), headers={**headers, **kw.pop("extra", {})}, **kw)


def expect_refused(http: httpx.Client, path: str, body: Any, status: int, headers: dict[str, str] = OPS) -> dict:
    before = count_runs()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = http.post(path, content=content, headers=headers)
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error", "field"}
    assert count_runs() == before, "a refused request created a flow run"
    return dict(resp.json())


def alert(
    name: str = "HighLoad", status: str = "firing", fingerprint: str = "fp1", starts: datetime | None = None,
    **labels: str,
) -> dict[str, Any]:
    starts = starts or datetime.now(UTC).replace(microsecond=0)
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} is {status}"},
        "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": (starts + timedelta(minutes=1)).isoformat() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4", "groupKey": "{}:{alertname=\"x\"}", "truncatedAlerts": 0, "status": status,
        "receiver": "scalewise", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": list(alerts),
    }


# --- size, syntax, schema --------------------------------------------------------------------------


def test_oversized_body_by_content_length_and_by_bytes_read(http: httpx.Client) -> None:
    big = json.dumps({"workload": "web", "action": "scale-out", "reason": "x" * 70_000}).encode()
    out = expect_refused(http, "/v1/actions", big, 413)
    assert out["field"] == "Content-Length"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(70):
            yield b" " * 1024

    before = count_runs()
    resp = http.post("/v1/actions", content=chunks(), headers=OPS)
    assert resp.status_code == 413, resp.text
    assert count_runs() == before


def test_malformed_json_and_non_objects(http: httpx.Client) -> None:
    for body in (b"{not json", b"", b"\xff\xfe\x00", b"[" * 20_000, b'{"a": 1e99999}', b"NaN"):
        expect_refused(http, "/v1/actions", body, 400)
    expect_refused(http, "/v1/actions", b"[1, 2]", 400)
    expect_refused(http, "/v1/alertmanager", b'"firing"', 400, AM)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"workload": "web", "action": "scale", "replicas": 2, "replicas": 5}', "replicas"),
        (b'{"workload": "web", "workload": "api", "action": "scale-out"}', "workload"),
        (b'{"workload": "web", "action": "scale-out", "dry_run": true, "dry_run": false}', "dry_run"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(http: httpx.Client, body: bytes, field: str) -> None:
    out = expect_refused(http, "/v1/actions", body, 400)  # no run: json would have kept the last value
    assert out["field"] == field and "duplicate key" in out["error"], out
    signed = signed_headers(CREDENTIALS["ci"].hmac_secret.get_secret_value(), body)  # type: ignore[union-attr]
    assert expect_refused(http, "/v1/actions", body, 400, signed)["field"] == field


def test_duplicate_keys_in_an_alertmanager_notification(http: httpx.Client) -> None:
    body = json.dumps(notification(alert("QueueDeep", fingerprint="dup-1", workload="web"))).encode()
    body = body.replace(b'"workload": "web"', b'"workload": "web", "workload": "api"')
    out = expect_refused(http, "/v1/alertmanager", body, 400, AM)
    assert out["field"] == "workload" and "duplicate key" in out["error"], out


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workload": "web", "action": "scale-out", "colour": "red"}, "colour"),
        ({"workload": "web", "action": "explode"}, "action"),
        ({"workload": "web"}, "action"),
        ({"action": "scale-out"}, "workload"),
        ({"workload": "web", "action": "scale", "replicas": "3"}, "replicas"),
        ({"workload": "web", "action": "scale", "replicas": 3.0}, "replicas"),
        ({"workload": "web", "action": "scale", "replicas": True}, "replicas"),
        ({"workload": "web", "action": "scale-out", "dry_run": "yes"}, "dry_run"),
        ({"workload": 7, "action": "scale-out"}, "workload"),
    ],
)
def test_schema_errors_name_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    out = expect_refused(http, "/v1/actions", body, 400)
    assert out["field"] == field, out


def test_alertmanager_schema(http: httpx.Client) -> None:
    bad_version = {**notification(alert()), "version": "3"}
    assert expect_refused(http, "/v1/alertmanager", bad_version, 400, AM)["field"] == "version"
    no_labels = notification({**alert(), "labels": None})
    assert expect_refused(http, "/v1/alertmanager", no_labels, 400, AM)["field"] == "alerts[0].labels"
    bad_time = notification({**alert(), "startsAt": "yesterday"})
    assert expect_refused(http, "/v1/alertmanager", bad_time, 400, AM)["field"] == "alerts[0].startsAt"


# --- semantics: 404 / 422 ------------------------------------------------------------------------------


def test_unknown_workload(http: httpx.Client) -> None:
    out = expect_refused(http, "/v1/actions", {"workload": "nope", "action": "scale-out"}, 404)
    assert out["field"] == "workload"
    body = notification(alert("QueueDeep", fingerprint="q404", workload="ghost"))
    out = expect_refused(http, "/v1/alertmanager", body, 404, AM)
    assert out["field"] == "alerts[0].workload"


def test_replicas_outside_bounds_and_bad_params(http: httpx.Client) -> None:
    # web: min 1 max 4; api: min 2 max 3
    for body, field in [
        ({"workload": "web", "action": "scale", "replicas": 5}, "replicas"),
        ({"workload": "api", "action": "scale", "replicas": 1}, "replicas"),
        ({"workload": "web", "action": "scale", "replicas": -1}, "replicas"),
        ({"workload": "web", "action": "scale"}, "replicas"),
        ({"workload": "web", "action": "scale-out", "by": 0}, "by"),
        ({"workload": "web", "action": "scale-in", "by": 10_001}, "by"),
        ({"workload": "web", "action": "scale-out", "image": "x:1"}, "image"),
        ({"workload": "web", "action": "rolling-update"}, "image"),
        ({"workload": "web", "action": "rolling-update", "image": "bad image"}, "image"),
        ({"workload": "web", "action": "rollback", "to_revision": 0}, "to_revision"),
    ]:
        out = expect_refused(http, "/v1/actions", body, 422)
        assert out["field"] == field, (body, out)
    body = notification(alert("QueueDeep", fingerprint="qx"))  # route needs a 'workload' label
    assert expect_refused(http, "/v1/alertmanager", body, 422, AM)["field"] == "alerts[0].labels.workload"


def test_one_bad_alert_refuses_the_whole_notification(http: httpx.Client) -> None:
    body = notification(alert(fingerprint="good-1"), alert("QueueDeep", fingerprint="bad-1", workload="ghost"))
    expect_refused(http, "/v1/alertmanager", body, 404, AM)


# --- accepted requests ------------------------------------------------------------------------------------


def test_action_accepted_creates_the_run_before_answering(http: httpx.Client) -> None:
    before = count_runs()
    resp = post(http, "/v1/actions", {"workload": "web", "action": "scale", "replicas": 3, "reason": "load test"})
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["deployment"] == f"scale/{TEST_SUFFIX}" and out["workload"] == "web"
    assert count_runs() == before + 1
    run = read_run(out["flow_run_id"])
    p = run.parameters
    assert p["workload"] == "web" and p["replicas"] == 3 and p["reason"] == "load test" and p["dry_run"] is False
    assert p["trigger"]["kind"] == "webhook" and p["trigger"]["actor"] == "ops"
    assert p["max_observation_age_s"] == 300.0
    assert abs(datetime.fromisoformat(p["observed_at"]) - datetime.now(UTC)) < timedelta(seconds=60)
    assert "webhook" in run.tags


def test_rolling_update_and_rollback_parameters(http: httpx.Client) -> None:
    resp = post(http, "/v1/actions", {"workload": "web", "action": "rolling-update", "image": "scalewise/busybox:2"})
    assert resp.status_code == 202, resp.text
    p = read_run(resp.json()["flow_run_id"]).parameters
    assert p["image"] == "scalewise/busybox:2" and "observed_at" not in p
    resp = post(http, "/v1/actions", {"workload": "web", "action": "rollback", "to_revision": 2})
    assert resp.status_code == 202, resp.text
    assert read_run(resp.json()["flow_run_id"]).parameters["to_revision"] == 2


def test_signed_caller_accepted(http: httpx.Client) -> None:
    body = json.dumps({"workload": "api", "action": "scale-in", "dry_run": True}).encode()
    headers = signed_headers(CREDENTIALS["ci"].hmac_secret.get_secret_value(), body)  # type: ignore[union-attr]
    resp = http.post("/v1/actions", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    assert read_run(resp.json()["flow_run_id"]).parameters["trigger"]["actor"] == "ci"


def test_idempotency_key_starts_one_run(http: httpx.Client) -> None:
    body = {"workload": "web", "action": "scale-out", "by": 2, "dry_run": True}
    before = count_runs()
    first = post(http, "/v1/actions", body, extra={"Idempotency-Key": "deploy-42"})
    second = post(http, "/v1/actions", body, extra={"Idempotency-Key": "deploy-42"})
    assert first.status_code == 202 and second.status_code == 200, (first.text, second.text)
    assert second.json()["flow_run_id"] == first.json()["flow_run_id"] and second.json()["duplicate"] is True
    assert count_runs() == before + 1
    # the same key with another body is a conflict; another caller's same key is its own
    conflict = post(http, "/v1/actions", {**body, "by": 3}, extra={"Idempotency-Key": "deploy-42"})
    assert conflict.status_code == 409 and conflict.json()["field"] == "Idempotency-Key"
    assert count_runs() == before + 1
    long_key = post(http, "/v1/actions", body, extra={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 400


def test_alert_firing_then_resolved_then_duplicates(http: httpx.Client) -> None:
    starts = datetime.now(UTC).replace(microsecond=0)
    before = count_runs()
    fired = post(http, "/v1/alertmanager", notification(alert(fingerprint="fr-1", starts=starts)), AM)
    assert fired.status_code == 202, fired.text
    (run,) = fired.json()["runs"]
    assert run["deployment"] == f"scale-out/{TEST_SUFFIX}" and run["route"] == "web-load"
    p = read_run(run["flow_run_id"]).parameters
    assert p["by"] == 1 and p["trigger"] == {
        "kind": "webhook", "actor": "alertmanager",
        "detail": "alert HighLoad firing (route web-load, fingerprint fr-1)",
    }
    assert datetime.fromisoformat(p["observed_at"]) == starts and p["reason"] == "HighLoad is firing"
    # Alertmanager re-sends the same alert (group_interval / repeat_interval / HA peers): no new run
    again = post(http, "/v1/alertmanager", notification(alert(fingerprint="fr-1", starts=starts)), AM)
    assert again.status_code == 200 and again.json()["runs"][0]["duplicate"] is True
    assert again.json()["runs"][0]["flow_run_id"] == run["flow_run_id"]
    resolved = post(
        http, "/v1/alertmanager",
        notification(alert(status="resolved", fingerprint="fr-1", starts=starts), status="resolved"), AM,
    )
    assert resolved.status_code == 202, resolved.text
    assert resolved.json()["runs"][0]["deployment"] == f"scale-in/{TEST_SUFFIX}"
    # the alert fires again later: a new instance (new startsAt) acts again
    later = post(http, "/v1/alertmanager",
                 notification(alert(fingerprint="fr-1", starts=starts + timedelta(minutes=5))), AM)
    assert later.status_code == 202
    assert count_runs() == before + 3


def test_unmatched_alerts_are_acknowledged_without_runs(http: httpx.Client) -> None:
    before = count_runs()
    resp = post(http, "/v1/alertmanager", notification(alert("DiskFull", fingerprint="d1")), AM)
    assert resp.status_code == 200 and resp.json() == {"runs": [], "unmatched": 1}
    # a route with no on_resolved ignores the resolution
    resp = post(http, "/v1/alertmanager", notification(
        alert("QueueDeep", status="resolved", fingerprint="q-r", workload="api"), status="resolved"), AM)
    assert resp.status_code == 200 and resp.json()["unmatched"] == 1
    assert count_runs() == before


def test_alert_workload_from_label(http: httpx.Client) -> None:
    resp = post(http, "/v1/alertmanager", notification(alert("QueueDepth", fingerprint="ql", workload="api")), AM)
    assert resp.status_code == 202, resp.text
    (run,) = resp.json()["runs"]
    assert run["workload"] == "api" and run["deployment"] == f"scale/{TEST_SUFFIX}"
    assert read_run(run["flow_run_id"]).parameters["replicas"] == 3


def test_burst_of_20_duplicate_alerts_starts_one_run(receiver: UvicornThread) -> None:
    body = json.dumps(notification(alert(fingerprint="burst-1"))).encode()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=60) as client:
            return list(await asyncio.gather(
                *(client.post("/v1/alertmanager", content=body, headers=AM) for _ in range(20))
            ))

    before = count_runs()
    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [202], codes
    ids = {r.json()["runs"][0]["flow_run_id"] for r in responses}
    assert len(ids) == 1
    assert count_runs() == before + 1


def test_burst_of_20_same_idempotency_key_starts_one_run(receiver: UvicornThread) -> None:
    body = json.dumps({"workload": "web", "action": "scale-in", "dry_run": True}).encode()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=60) as client:
            return list(await asyncio.gather(*(
                client.post("/v1/actions", content=body, headers={**OPS, "Idempotency-Key": "burst-key"})
                for _ in range(20)
            )))

    before = count_runs()
    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["flow_run_id"] for r in responses}) == 1
    assert count_runs() == before + 1


# --- coalescing: a newer absolute request supersedes queued older ones ------------------------------


def state_of(run_id: str) -> tuple[str, str | None]:
    state = read_run(run_id).state
    return state.type.value, state.message


def test_absolute_requests_supersede_queued_ones_relative_ones_never(http: httpx.Client) -> None:
    """No runner serves these deployments: every run stays queued (Scheduled) unless superseded."""
    tag = uuid.uuid4().hex[:8]  # keys unique to this test run (Prefect keeps idempotency keys)

    def send(body: dict[str, Any], key: str) -> dict[str, Any]:
        resp = post(http, "/v1/actions", {"workload": "batch", **body}, extra={"Idempotency-Key": f"{key}-{tag}"})
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    first = send({"action": "scale", "replicas": 2}, "first")
    step = send({"action": "scale-out", "by": 1}, "step")
    dry = send({"action": "scale", "replicas": 5, "dry_run": True}, "dry")
    back = send({"action": "rollback"}, "back")  # no revision: relative to what runs then
    second = send({"action": "scale", "replicas": 3}, "second")
    assert second["supersedes"] == [first["flow_run_id"]], second
    last = send({"action": "scale", "replicas": 4}, "last")
    assert last["supersedes"] == [second["flow_run_id"]], last
    assert "supersedes" not in first and "superseded_by" not in last

    for old, new, key in ((first, second, "second"), (second, last, "last")):
        kind, message = state_of(old["flow_run_id"])
        assert kind == "CANCELLED", (kind, message)
        assert message and message.startswith(f"superseded by request {key}-{tag}/run {new['flow_run_id']}")
    for kept in (step, dry, back, last):  # relative, dry-run and the newest: still queued
        assert state_of(kept["flow_run_id"])[0] == "SCHEDULED", kept

    # a retry of a superseded request still maps to its own run, and says what superseded it
    again = post(http, "/v1/actions", {"workload": "batch", "action": "scale", "replicas": 2},
                 extra={"Idempotency-Key": f"first-{tag}"})
    assert again.status_code == 200, again.text
    out = again.json()
    assert out["flow_run_id"] == first["flow_run_id"] and out["duplicate"] is True
    assert out["state"] == "Cancelled"
    assert out["superseded_by"] == {"request": f"second-{tag}", "flow_run_id": second["flow_run_id"]}
    assert post(http, "/v1/actions", {"workload": "batch", "action": "scale", "replicas": 4},
                extra={"Idempotency-Key": f"last-{tag}"}).json()["state"] == "Scheduled"

    # more relative steps supersede nothing; another workload's queue is its own
    more = send({"action": "scale-out", "by": 2}, "more")
    assert "supersedes" not in more and state_of(step["flow_run_id"])[0] == "SCHEDULED"
    other = post(http, "/v1/actions", {"workload": "web", "action": "scale", "replicas": 2},
                 extra={"Idempotency-Key": f"web-{tag}"})
    assert other.status_code == 202 and last["flow_run_id"] not in other.json().get("supersedes", [])
    assert state_of(last["flow_run_id"])[0] == "SCHEDULED"

    # rolling-update (an image) and rollback to a revision are absolute too
    up1 = send({"action": "rolling-update", "image": "scalewise/busybox:2"}, "up1")
    up2 = send({"action": "rolling-update", "image": "scalewise/busybox:1"}, "up2")
    assert up2["supersedes"] == [up1["flow_run_id"]]
    to1 = send({"action": "rollback", "to_revision": 1}, "to1")
    to2 = send({"action": "rollback", "to_revision": 2}, "to2")
    assert to2["supersedes"] == [to1["flow_run_id"]]  # the relative rollback ("back") is not among them
    assert state_of(back["flow_run_id"])[0] == "SCHEDULED"
    metrics = http.get("/metrics").text
    assert f'scalewise_webhook_superseded_total{{deployment="scale/{TEST_SUFFIX}"}}' in metrics


def test_concurrent_absolute_requests_leave_only_the_newest(receiver: UvicornThread) -> None:
    """A burst at once: whatever the interleaving, exactly one run is left queued, the newest stored,
    and every other one is Cancelled naming a run of the burst; none is lost (each is final or queued)."""
    tag = uuid.uuid4().hex[:8]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=60) as client:
            return list(await asyncio.gather(*(
                client.post("/v1/actions", content=json.dumps(
                    {"workload": "batch", "action": "scale", "replicas": 1 + i % 9}).encode(),
                    headers={**OPS, "Idempotency-Key": f"burst-{i}-{tag}"})
                for i in range(12)
            )))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [202] * 12, [r.text for r in responses]
    ids = [r.json()["flow_run_id"] for r in responses]
    runs = {run_id: read_run(run_id) for run_id in ids}
    left = [run_id for run_id, run in runs.items() if run.state.type.value != "CANCELLED"]
    newest = max(runs.values(), key=lambda r: (r.created, str(r.id)))
    assert left == [str(newest.id)], (left, str(newest.id))
    assert runs[left[0]].state.type.value == "SCHEDULED"
    for run_id, run in runs.items():
        if run_id != left[0]:
            pointer = (run.state.message or "").split("/run ")[-1][:36]
            assert pointer in ids, run.state.message
    superseded_by = [r.json()["superseded_by"] for r in responses if "superseded_by" in r.json()]
    assert all(s["flow_run_id"] in ids for s in superseded_by)


def test_a_claim_left_by_a_stopped_receiver_is_finished_at_start(
    http: httpx.Client, webhook_workloads: Any
) -> None:
    """A receiver that claimed a run (Scheduled -> Pending) and stopped before cancelling it leaves it
    Pending, which no runner starts: the next receiver to start cancels it (nothing stays unfinished)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from scalewise.webhook.app import create_app
    from scalewise.webhook.coalesce import superseded_message
    from tests.support.procs import wait_until

    tag = uuid.uuid4().hex[:8]
    old = post(http, "/v1/actions", {"workload": "batch", "action": "scale", "replicas": 6},
               extra={"Idempotency-Key": f"old-{tag}"}).json()["flow_run_id"]
    message = superseded_message(f"new-{tag}", str(uuid.uuid4()), "scale", "batch", {"replicas": 7})
    with get_client(sync_client=True) as client:  # the claim, as a receiver makes it
        assert client.set_flow_run_state(old, Pending(message=message)).status.value == "ACCEPT"
    assert state_of(old) == ("PENDING", message)
    fresh = UvicornThread(create_app(base_config(), CREDENTIALS, workloads=webhook_workloads)).start()
    try:
        wait_until(lambda: state_of(old)[0] == "CANCELLED", "the fresh receiver to cancel the claimed run", 60)
    finally:
        fresh.stop()
    assert state_of(old) == ("CANCELLED", message)


def test_rate_limit_429_and_nothing_accepted_is_lost(http: httpx.Client) -> None:
    before = count_runs()
    accepted: list[str] = []
    limited = 0
    for i in range(15):
        resp = post(http, "/v1/actions", {"workload": "web", "action": "scale-out", "dry_run": True,
                                          "reason": f"rl {i}"}, SLOW)
        if resp.status_code == 202:
            accepted.append(resp.json()["flow_run_id"])
        else:
            assert resp.status_code == 429, resp.text
            assert int(resp.headers["Retry-After"]) >= 1
            assert resp.json()["error"].startswith("rate limit")
            limited += 1
    # burst 5 + one token per 20 s: however slowly a loaded server answers, few refills land in the loop
    assert 5 <= len(accepted) <= 8 and limited >= 7, (len(accepted), limited)
    assert count_runs() == before + len(accepted)
    for run_id in accepted:
        assert read_run(run_id).parameters["workload"] == "web"


def test_metrics_and_health(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    text = http.get("/metrics").text
    for name in ("scalewise_webhook_requests_total", "scalewise_webhook_runs_started_total",
                 "scalewise_webhook_rejected_total", "scalewise_webhook_duplicates_total",
                 "scalewise_webhook_rate_limited_total", "scalewise_webhook_request_seconds_bucket"):
        assert name in text, name
    assert 'route="actions",status="202"' in text


def test_prefect_unreachable_is_503_and_retryable(webhook_workloads: Any, prefect_server: Any) -> None:
    """A run that cannot be created is refused (503 + Retry-After), never reported as accepted."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from scalewise.webhook.app import create_app
    from tests.support.prefect_env import free_port

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        app = create_app(base_config(), CREDENTIALS, workloads=webhook_workloads)
    server = UvicornThread(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = json.dumps({"workload": "web", "action": "scale-out"}).encode()
            secret = CREDENTIALS["ci"].hmac_secret.get_secret_value()  # type: ignore[union-attr]
            headers = signed_headers(secret, body)
            resp = client.post("/v1/actions", content=body, headers=headers)
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "5", resp.text
            # the exact signed request may be retried (it was not acted upon)
            assert client.post("/v1/actions", content=body, headers=headers).status_code == 503
    finally:
        server.stop()


# --- fuzzing ------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
SCALAR = st.none() | st.booleans() | st.integers(-5, 20_000) | st.text(max_size=12) | st.floats(allow_nan=False)
ACTION_BODIES = st.fixed_dictionaries(
    {
        "workload": st.sampled_from(["web", "api", "nope", "", "Web"]) | SCALAR,
        "action": st.sampled_from(["scale-out", "scale-in", "scale", "rolling-update", "rollback", "x"]) | SCALAR,
    },
    optional={
        "replicas": st.integers(-2, 6) | SCALAR,
        "by": st.integers(-1, 3) | SCALAR,
        "image": st.sampled_from(["scalewise/busybox:2", "bad image", ""]) | SCALAR,
        "to_revision": st.integers(-1, 3) | SCALAR,
        "reason": st.text(max_size=30) | SCALAR,
        "dry_run": st.just(True) | SCALAR,
        "extra": JSON,
    },
)


def _check_response(resp: httpx.Response, before: int) -> int:
    """Returns how many runs this response says it started; asserts 4xx never starts one."""
    assert resp.status_code < 500, resp.text
    assert resp.status_code in (200, 202, 400, 403, 404, 409, 413, 422), resp.text
    if resp.status_code >= 400:
        assert set(resp.json()) == {"error", "field"}
        assert count_runs() == before, f"{resp.status_code} created a run: {resp.text}"
        return 0
    out = resp.json()
    runs = out.get("runs", [out])
    return sum(1 for r in runs if not r.get("duplicate"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON | ACTION_BODIES)
def test_fuzz_actions(http: httpx.Client, body: Any) -> None:
    before = count_runs()
    resp = http.post("/v1/actions", content=json.dumps(body).encode(), headers=OPS)
    started = _check_response(resp, before)
    assert count_runs() == before + started
    if started:
        assert isinstance(body, dict) and body.get("workload") in ("web", "api")


ALERTS = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]) | SCALAR,
        "labels": st.fixed_dictionaries(
            {"alertname": st.sampled_from(["HighLoad", "QueueDeep", "Other"]) | SCALAR},
            optional={"workload": st.sampled_from(["web", "api", "ghost"]) | SCALAR},
        ) | JSON,
        "startsAt": st.sampled_from(["2026-01-01T00:00:00Z", "now"]).map(
            lambda s: datetime.now(UTC).isoformat() if s == "now" else s
        ) | SCALAR,
    },
    optional={"fingerprint": st.text(max_size=8) | SCALAR, "endsAt": SCALAR, "annotations": JSON},
)
NOTIFICATIONS = st.fixed_dictionaries(
    {"version": st.just("4") | SCALAR, "status": st.sampled_from(["firing", "resolved"]) | SCALAR,
     "alerts": st.lists(ALERTS, max_size=3) | JSON},
    optional={"receiver": SCALAR, "groupLabels": JSON, "externalURL": SCALAR},
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON | NOTIFICATIONS)
def test_fuzz_alertmanager(http: httpx.Client, body: Any) -> None:
    before = count_runs()
    resp = http.post("/v1/alertmanager", content=json.dumps(body).encode(), headers=AM)
    started = _check_response(resp, before)
    assert count_runs() == before + started


def test_config_is_validated() -> None:
    from scalewise.errors import SpecError
    from scalewise.webhook.config import parse_config

    with pytest.raises(SpecError, match="needs a bearer token"):
        parse_config({"callers": [{"name": "x"}]})
    with pytest.raises(SpecError, match="exactly one of"):
        base_config(routes=[{"name": "r", "match": {"a": "b"}, "on_firing": {"action": "scale-out"}}])
    with pytest.raises(SpecError, match="requires replicas"):
        base_config(routes=[{"name": "r", "match": {"a": "b"}, "workload": "web", "on_firing": {"action": "scale"}}])
    with pytest.raises(SpecError, match="not a regular expression"):
        base_config(routes=[{"name": "r", "match_re": {"a": "("}, "workload": "w",
                             "on_firing": {"action": "scale-out"}}])
    with pytest.raises(SpecError, match="unique"):
        base_config(callers=[{"name": "a", "token_env": "X"}, {"name": "a", "token_env": "Y"}])


def test_config_file_is_loaded_strictly(tmp_path: Path) -> None:
    from scalewise.errors import SpecError
    from scalewise.webhook.config import load_config

    dup = tmp_path / "webhook.yaml"
    dup.write_text("callers:\n  - {name: ops, token_env: A}\ncallers: []\n")
    with pytest.raises(SpecError) as info:
        load_config(dup)
    assert (info.value.source, info.value.field) == (str(dup), "callers")
    assert "duplicate key at line 3" in info.value.reason
    dup.write_bytes(b"callers: [{name: \xe9}]\n")
    with pytest.raises(SpecError, match=r"webhook\.yaml: not UTF-8"):
        load_config(dup)
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_token_bucket_and_idempotency_ttl() -> None:
    from scalewise.webhook.app import IdempotencyStore, TokenBucket
    from scalewise.webhook.starter import StartedRun

    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0
    store = IdempotencyStore(10.0, clock=lambda: now[0])
    store.put("k", StartedRun("run-1", None), "scale/x", "web", "h")
    assert store.get("k") is not None and store.get("k").flow_run_id == "run-1"  # type: ignore[union-attr]
    now[0] = 11.0
    assert store.get("k") is None


def test_restart_keeps_idempotency_through_prefect(
    webhook_workloads: Any, prefect_server: Any, webhook_deployments: list[str]
) -> None:
    """A fresh receiver (empty memory) still starts no second run for an alert already acted on:
    the Prefect server returns the run it created for the same idempotency key."""
    from scalewise.webhook.app import create_app

    body = json.dumps(notification(alert(fingerprint="restart-1"))).encode()
    first_app = UvicornThread(create_app(base_config(), CREDENTIALS, workloads=webhook_workloads)).start()
    try:
        first = httpx.post(f"{first_app.url}/v1/alertmanager", content=body, headers=AM, timeout=30)
    finally:
        first_app.stop()
    assert first.status_code == 202, first.text
    before = count_runs()
    time.sleep(2.5)  # the receiver flags a run created over 2s before the request as a duplicate
    second_app = UvicornThread(create_app(base_config(), CREDENTIALS, workloads=webhook_workloads)).start()
    try:
        second = httpx.post(f"{second_app.url}/v1/alertmanager", content=body, headers=AM, timeout=30)
    finally:
        second_app.stop()
    assert second.status_code == 200, second.text
    assert second.json()["runs"][0]["flow_run_id"] == first.json()["runs"][0]["flow_run_id"]
    assert second.json()["runs"][0]["duplicate"] is True
    assert count_runs() == before


def test_cli_serves_the_receiver(
    prefect_server: Any, webhook_deployments: list[str], webhook_workloads: Any, tmp_path: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from tests.support.prefect_env import ROOT, free_port

    cfg = {
        "deployment_suffix": TEST_SUFFIX,
        "callers": [{"name": "ops", "token_env": "CLI_TEST_TOKEN"}],
        "routes": [{"name": "r", "match": {"alertname": "HighLoad"}, "workload": "web",
                    "on_firing": {"action": "scale-out", "by": 2}}],
    }
    path = tmp_path / "webhook.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url, SCALEWISE_WORKLOADS=str(webhook_workloads),
               CLI_TEST_TOKEN="cli-secret-123")
    log = tmp_path / "webhook.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scalewise.cli", "webhook", "--port", str(port), "--config", str(path)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"the CLI receiver did not start:\n{log.read_text()}")
        before = count_runs()
        resp = httpx.post(f"{url}/v1/alertmanager", timeout=30,
                          content=json.dumps(notification(alert(fingerprint="cli-1"))).encode(),
                          headers={"Authorization": "Bearer cli-secret-123"})
        assert resp.status_code == 202, resp.text
        assert read_run(resp.json()["runs"][0]["flow_run_id"]).parameters["by"] == 2
        assert count_runs() == before + 1
        bad = httpx.post(f"{url}/v1/actions", json={}, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert "cli-secret-123" not in log.read_text()
