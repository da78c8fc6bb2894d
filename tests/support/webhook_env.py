"""The webhook receiver under test: a real uvicorn on 127.0.0.1 (random port, in a thread) against
the session's real Prefect server, with the operation flows registered as deployments."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from scalewise.local import LocalServer
from scalewise.webhook.config import Credentials, WebhookConfig, parse_config
from tests.support.prefect_env import free_port

#: Deployment name used by request-level tests: no runner serves it, so their runs stay Scheduled
#: and a ``serve.py`` started by another test (deployments "<flow>/scalewise") never picks them up.
TEST_SUFFIX = "webhook-test"


class UvicornThread:
    """uvicorn serving ``app`` in a daemon thread (its own event loop), stopped by ``stop()``."""

    def __init__(self, app: Starlette, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def register_deployments(suffix: str) -> list[str]:
    """Register the operation flows as deployments ``<flow>/<suffix>`` (no runner executes them)."""
    from flows.deploy import deploy
    from flows.rollback import rollback
    from flows.rolling_update import rolling_update
    from flows.scale import scale
    from flows.scale_in import scale_in
    from flows.scale_out import scale_out

    names = []
    for f in (deploy, scale, scale_out, scale_in, rolling_update, rollback):
        dep = f.to_deployment(name=suffix, tags=["scalewise", "test"])
        dep.apply()
        names.append(f"{f.name}/{suffix}")
    return names


def count_runs() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return int(client.count_flow_runs())


def read_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


WORKLOADS_YAML = """
workloads:
  - name: web
    target: swarm
    image: scalewise/busybox:1
    replicas: {min: 1, max: 4}
  - name: api
    target: docker
    image: scalewise/busybox:1
    replicas: {min: 2, max: 3}
  - name: batch
    target: swarm
    image: scalewise/busybox:1
    replicas: {min: 0, max: 9}
"""


def base_config(**overrides: Any) -> WebhookConfig:
    data: dict[str, Any] = {
        "deployment_suffix": TEST_SUFFIX,
        "callers": [
            {"name": "alertmanager", "token_env": "T_AM", "endpoints": ["alertmanager"],
             "rate_limit": {"per_second": 1000, "burst": 1000}},
            {"name": "ci", "hmac_secret_env": "T_CI", "endpoints": ["actions"],
             "rate_limit": {"per_second": 1000, "burst": 1000}},
            {"name": "ops", "token_env": "T_OPS", "rate_limit": {"per_second": 1000, "burst": 1000}},
            {"name": "viewer", "token_env": "T_VIEW", "allow_actions": ["scale-out"], "allow_workloads": ["api"]},
            {"name": "slow", "token_env": "T_SLOW", "rate_limit": {"per_second": 0.05, "burst": 5}},
        ],
        "routes": [
            {"name": "web-load", "match": {"alertname": "HighLoad"}, "workload": "web",
             "on_firing": {"action": "scale-out", "by": 1}, "on_resolved": {"action": "scale-in", "by": 1}},
            {"name": "by-label", "match_re": {"alertname": "Queue.*"}, "workload_label": "workload",
             "on_firing": {"action": "scale", "replicas": 3}},
        ],
    }
    data.update(overrides)
    return parse_config(data)


CREDENTIALS = {
    "alertmanager": Credentials.model_validate({"token": "am-token-0123456789"}),
    "ci": Credentials.model_validate({"hmac_secret": "ci-secret-abcdef"}),
    "ops": Credentials.model_validate({"token": "ops-token-9876543210"}),
    "viewer": Credentials.model_validate({"token": "viewer-token-000"}),
    "slow": Credentials.model_validate({"token": "slow-token-111"}),
}


@pytest.fixture(scope="session")
def webhook_deployments(prefect_server: LocalServer) -> list[str]:
    return register_deployments(TEST_SUFFIX)


@pytest.fixture(scope="module")
def webhook_workloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("webhook-workloads")
    (folder / "workloads.yaml").write_text(WORKLOADS_YAML)
    return folder


@pytest.fixture(scope="module")
def receiver(
    prefect_server: LocalServer, webhook_deployments: list[str], webhook_workloads: Path
) -> Iterator[UvicornThread]:
    from scalewise.webhook.app import create_app

    app = create_app(base_config(), CREDENTIALS, workloads=webhook_workloads)
    server = UvicornThread(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(receiver: UvicornThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=receiver.url, timeout=30) as client:
        yield client
