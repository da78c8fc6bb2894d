"""Webhook authentication against a real uvicorn + real Prefect server: every refusal starts nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from scalewise.errors import SpecError
from scalewise.webhook.auth import sign, signed_headers
from scalewise.webhook.config import resolve_credentials
from tests.support.webhook_env import CREDENTIALS, base_config, count_runs

pytestmark = pytest.mark.prefect

AM = {"Authorization": "Bearer am-token-0123456789"}
OPS = {"Authorization": "Bearer ops-token-9876543210"}
CI_SECRET = "ci-secret-abcdef"


def action(**extra: Any) -> bytes:
    return json.dumps({"workload": "web", "action": "scale-out", "by": 1, "dry_run": True, **extra}).encode()


def refused(http: httpx.Client, path: str, body: bytes, headers: dict[str, str], status: int) -> dict[str, Any]:
    before = count_runs()
    resp = http.post(path, content=body, headers={"Content-Type": "application/json", **headers})
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert set(payload) == {"error", "field"}
    assert count_runs() == before, "a refused request created a flow run"
    return payload


def test_missing_token(http: httpx.Client) -> None:
    out = refused(http, "/v1/actions", action(), {}, 401)
    assert out["field"] == "Authorization"
    assert "missing" in out["error"]


def test_wrong_token_and_wrong_scheme(http: httpx.Client) -> None:
    refused(http, "/v1/actions", action(), {"Authorization": "Bearer nope"}, 401)
    refused(http, "/v1/actions", action(), {"Authorization": "Basic b3BzOm9wcw=="}, 401)
    # a token must not be a prefix match
    refused(http, "/v1/actions", action(), {"Authorization": "Bearer ops-token-987654321"}, 401)


def test_error_never_echoes_the_secret(http: httpx.Client) -> None:
    resp = http.post("/v1/actions", content=action(), headers={"Authorization": "Bearer ops-token-WRONG"})
    assert resp.status_code == 401
    assert "ops-token" not in resp.text and "WRONG" not in resp.text


def test_bad_signature(http: httpx.Client) -> None:
    body = action()
    headers = signed_headers("not-the-secret", body)
    out = refused(http, "/v1/actions", body, headers, 401)
    assert out["field"] == "X-Scalewise-Signature"
    # a valid signature over a different body
    good = signed_headers(CI_SECRET, action(by=2))
    refused(http, "/v1/actions", body, good, 401)
    # malformed header
    refused(http, "/v1/actions", body, {**signed_headers(CI_SECRET, body), "X-Scalewise-Signature": "md5=00"}, 401)


def test_expired_and_future_timestamps(http: httpx.Client) -> None:
    body = action()
    old = int(time.time()) - 301
    out = refused(http, "/v1/actions", body, signed_headers(CI_SECRET, body, old), 401)
    assert out["field"] == "X-Scalewise-Timestamp"
    future = int(time.time()) + 400
    refused(http, "/v1/actions", body, signed_headers(CI_SECRET, body, future), 401)
    refused(http, "/v1/actions", body, {"X-Scalewise-Signature": sign(CI_SECRET, "", body)}, 401)
    refused(http, "/v1/actions", body, {**signed_headers(CI_SECRET, body), "X-Scalewise-Timestamp": "soon"}, 401)


def test_signed_request_accepted_once_then_replay_refused(http: httpx.Client) -> None:
    body = action(reason="signed")
    headers = {**signed_headers(CI_SECRET, body), "Content-Type": "application/json"}
    before = count_runs()
    first = http.post("/v1/actions", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert count_runs() == before + 1
    out = refused(http, "/v1/actions", body, headers, 401)
    assert "replayed" in out["error"]


def test_caller_limited_to_its_endpoints_actions_and_workloads(http: httpx.Client) -> None:
    # the alertmanager caller may not use /v1/actions, the ci caller may not post alerts
    refused(http, "/v1/actions", action(), AM, 403)
    viewer = {"Authorization": "Bearer viewer-token-000"}
    out = refused(http, "/v1/actions", action(), viewer, 403)  # workload web not allowed
    assert out["field"] == "workload"
    body = json.dumps({"workload": "api", "action": "scale-in", "by": 1}).encode()
    out = refused(http, "/v1/actions", body, viewer, 403)  # action not allowed
    assert out["field"] == "action"
    # 403 comes before 404: a limited caller learns nothing about other workloads
    body = json.dumps({"workload": "nope", "action": "scale-out"}).encode()
    refused(http, "/v1/actions", body, viewer, 403)


def test_unauthenticated_checks_come_before_parsing(http: httpx.Client) -> None:
    refused(http, "/v1/actions", b"{not json", {}, 401)
    refused(http, "/v1/alertmanager", b"[]", {"Authorization": "Bearer x"}, 401)


def test_credentials_from_env_and_prefect_secret_block(
    prefect_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    Secret(value="from-a-block-42").save("webhook-test-token", overwrite=True)
    monkeypatch.setenv("WH_ENV_TOKEN", "from-env-42")
    cfg = base_config(
        callers=[
            {"name": "a", "token_env": "WH_ENV_TOKEN"},
            {"name": "b", "token_secret_block": "webhook-test-token"},
        ]
    )
    creds = resolve_credentials(cfg)
    assert creds["a"].token is not None and creds["a"].token.get_secret_value() == "from-env-42"
    assert creds["b"].token is not None and creds["b"].token.get_secret_value() == "from-a-block-42"
    assert "from-env-42" not in repr(creds) and "from-a-block-42" not in str(creds)
    monkeypatch.delenv("WH_ENV_TOKEN")
    with pytest.raises(SpecError, match="WH_ENV_TOKEN is not set"):
        resolve_credentials(cfg)


def test_both_credentials_required_when_both_configured(
    prefect_server: Any, webhook_deployments: list[str], webhook_workloads: Any
) -> None:
    from scalewise.webhook.app import create_app
    from scalewise.webhook.config import Credentials
    from tests.support.webhook_env import UvicornThread

    cfg = base_config(callers=[{"name": "both", "token_env": "X", "hmac_secret_env": "Y"}])
    creds = {"both": Credentials.model_validate({"token": "tok-both", "hmac_secret": "sec-both"})}
    server = UvicornThread(create_app(cfg, creds, workloads=webhook_workloads)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = action()
            refused(client, "/v1/actions", body, {"Authorization": "Bearer tok-both"}, 401)
            refused(client, "/v1/actions", body, signed_headers("sec-both", body), 401)
            before = count_runs()
            ok = client.post(
                "/v1/actions", content=body,
                headers={"Authorization": "Bearer tok-both", **signed_headers("sec-both", body)},
            )
            assert ok.status_code == 202, ok.text
            assert count_runs() == before + 1
    finally:
        server.stop()


def test_credentials_fixture_matches_config() -> None:
    assert set(CREDENTIALS) == {c.name for c in base_config().callers}


def test_replay_guard_forgets_after_the_window() -> None:
    from scalewise.webhook.auth import ReplayGuard

    now = [1000.0]
    guard = ReplayGuard(300, clock=lambda: now[0])
    guard.mark("sha256=aa", timestamp=1000.0)
    assert guard.seen("sha256=aa") and not guard.seen("sha256=bb")
    now[0] = 1000.0 + 302  # the timestamp itself is outside the window by now, so it cannot be replayed
    assert not guard.seen("sha256=aa")
    guard.forget("sha256=aa")
    assert len(guard) == 0
