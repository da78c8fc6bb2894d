"""``POST /v1/approvals``: an authenticated caller answers a run paused for a person, on a real receiver
(uvicorn on loopback) and a real Prefect server. The paused run is a flow that asks through the same
``request_approval`` the canary and analysis flows use; the caller is recorded as the approver."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun

from scalewise.audit import Approval
from scalewise.local import LocalServer
from scalewise.webhook.config import Credentials
from tasks.approval import request_approval
from tests.support.docker_env import unique_name
from tests.support.prefect_env import read_events
from tests.support.procs import wait_for
from tests.support.webhook_env import UvicornThread, base_config

pytestmark = [pytest.mark.prefect]

TOKENS = {"approver": "approver-token-0123", "ops": "ops-token-0123456789", "narrow": "narrow-token-0123"}


@flow(name="approval-probe", flow_run_name="approval-probe-{workload}")
def probe(workload: str) -> Approval:
    """A run of ``workload`` that pauses for a person, as the canary and analysis flows do."""
    from prefect.runtime import flow_run

    return request_approval(f"probe of {workload}", 300, str(flow_run.id))


class Paused:
    """The probe flow running in a thread of this process (with the test server's settings); with
    ``heartbeat_s`` its run sends flow-run heartbeats, as every served and CLI run does."""

    def __init__(self, workload: str, heartbeat_s: int | None = None) -> None:
        self.workload = workload
        self.heartbeat_s = heartbeat_s
        self.result: Approval | None = None
        self.error: BaseException | None = None
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self._run,), daemon=True)
        self.thread.start()
        self.run = wait_for(self._paused, 120, f"the probe run of {workload} to pause")

    def _run(self) -> None:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        updates = {} if self.heartbeat_s is None else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: self.heartbeat_s}
        try:
            with temporary_settings(updates=updates):
                self.result = probe(workload=self.workload)
        except BaseException as exc:
            self.error = exc

    def _paused(self) -> FlowRun | None:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"approval-probe-{self.workload}"]))
            )
        return next((r for r in runs if r.state is not None and r.state.is_paused()), None)

    def answer(self, timeout_s: float = 120) -> Approval:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the probe run did not go on after the answer"
        assert self.error is None and self.result is not None, self.error
        return self.result


@pytest.fixture(scope="module")
def names() -> tuple[str, str]:
    return unique_name("apr"), unique_name("apo")


@pytest.fixture(scope="module")
def approvals(
    prefect_server: LocalServer, tmp_path_factory: pytest.TempPathFactory, names: tuple[str, str]
) -> Iterator[httpx.Client]:
    from scalewise.webhook.app import create_app

    mine, other = names
    folder = tmp_path_factory.mktemp("approval-workloads")
    (folder / "w.yaml").write_text(
        "workloads:\n" + "".join(
            f"  - {{name: {n}, target: docker, image: scalewise/busybox:1, replicas: {{min: 1, max: 2}}}}\n"
            for n in (mine, other)
        )
    )
    config = base_config(callers=[
        {"name": "approver", "token_env": "T_APPROVER", "endpoints": ["approvals"]},
        {"name": "ops", "token_env": "T_OPS"},  # the default endpoints: alertmanager and actions only
        {"name": "narrow", "token_env": "T_NARROW", "endpoints": ["approvals"], "allow_workloads": ["nothing-*"]},
    ])
    creds = {name: Credentials.model_validate({"token": token}) for name, token in TOKENS.items()}
    server = UvicornThread(create_app(config, creds, workloads=folder)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client
    finally:
        server.stop()


def post(client: httpx.Client, caller: str, body: Any) -> httpx.Response:
    return client.post("/v1/approvals", json=body, headers={"Authorization": f"Bearer {TOKENS[caller]}"})


def test_refusals_name_the_field_and_answer_nothing(approvals: httpx.Client, names: tuple[str, str]) -> None:
    mine, _ = names
    run = Paused(mine)
    try:
        cases: list[tuple[str, Any, int, str | None, str]] = [
            ("ops", {"workload": mine}, 403, None, "may not use this endpoint"),
            ("narrow", {"workload": mine}, 403, "workload", f"may not act on workload {mine!r}"),
            ("approver", {"workload": mine, "approve": "yes"}, 400, "approve", ""),
            ("approver", {"workload": mine, "approved": True}, 400, "approved", ""),
            ("approver", {"workload": mine, "comment": "x" * 2001}, 400, "comment", ""),
            ("approver", {"workload": mine, "run": "not-a-run"}, 400, "run", "is not a flow run id"),
            ("approver", {"workload": "no-such-workload"}, 404, "workload", "unknown workload"),
            ("approver", [mine], 400, None, "JSON object"),
        ]
        for caller, body, status, field, words in cases:
            resp = post(approvals, caller, body)
            assert resp.status_code == status, (body, resp.text)
            assert resp.json()["field"] == field and words in resp.json()["error"], (body, resp.text)
        # nothing above answered the run: it is still paused
        assert run._paused() is not None
    finally:
        post(approvals, "approver", {"workload": mine, "approve": False, "comment": "cleanup"})
        run.answer()


def test_the_caller_answers_by_workload_or_by_run_and_is_the_approver(
    approvals: httpx.Client, names: tuple[str, str]
) -> None:
    mine, other = names
    resp = post(approvals, "approver", {"workload": mine})
    assert resp.status_code == 404 and resp.json()["field"] == "workload", resp.text
    assert f"no run of workload {mine!r} is paused" in resp.json()["error"]

    # by workload: its one paused run, rejected with a comment
    run = Paused(mine)
    resp = post(approvals, "approver", {"workload": mine, "approve": False, "comment": "not during the sale"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"flow_run_id": str(run.run.id), "flow_run": run.run.name, "workload": mine,
                           "decision": "rejected", "approver": "webhook:approver"}
    answer = run.answer()
    assert (answer.approved, answer.approver, answer.comment) == (False, "webhook:approver", "not during the sale")
    resp = post(approvals, "approver", {"workload": mine})  # nothing paused any more
    assert resp.status_code == 404, resp.text

    # by run id: it must be a run of the workload named
    run = Paused(mine)
    resp = post(approvals, "approver", {"workload": other, "run": str(run.run.id)})
    assert resp.status_code == 404 and resp.json()["field"] == "run", resp.text
    assert f"is not a run of workload {other!r}" in resp.json()["error"]
    resp = post(approvals, "approver", {"workload": mine, "run": str(run.run.id), "comment": "ok"})
    assert resp.status_code == 200 and resp.json()["decision"] == "approved", resp.text
    answer = run.answer()
    assert (answer.approved, answer.approver, answer.comment) == (True, "webhook:approver", "ok")
    resp = post(approvals, "approver", {"workload": mine, "run": str(run.run.id)})  # answered already
    assert resp.status_code == 409 and "is not paused" in resp.json()["error"], resp.text


def heartbeats_of(run_id: str) -> int:
    return len(read_events({"event": {"name": ["prefect.flow-run.heartbeat"]},
                            "resource": {"id": [f"prefect.flow-run.{run_id}"]}}))


def zombie_window_s() -> float:
    """``within`` of the run_health automation that marks a silent run Crashed (deployments/automations.yaml)."""
    from deployments.apply_automations import load

    (rule,) = [a for a in load(section="run_health") if a["name"] == "scalewise-crash-zombie-flow-runs"]
    return float(rule["trigger"]["within"])


def test_a_run_paused_past_the_zombie_window_stays_paused_then_goes_on(
    approvals: httpx.Client, names: tuple[str, str]
) -> None:
    """A person may take minutes to answer. The paused run's process waits in ``pause_flow_run`` and
    keeps sending heartbeats, so the run_health automation (Crashed 45 s after a run's last heartbeat)
    never takes a slow answer for a dead process: held past that window plus a heartbeat period it is
    still Paused, its heartbeats are recorded, and it goes on when answered."""
    import time

    from scalewise.settings import HEARTBEAT_S

    mine, _ = names
    run = Paused(mine, heartbeat_s=HEARTBEAT_S)
    answered = False
    try:
        held_s = zombie_window_s() + HEARTBEAT_S + 5
        until = time.monotonic() + held_s
        while time.monotonic() < until:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.run.id).state
            assert state is not None and state.is_paused(), f"after {held_s - (until - time.monotonic()):.0f}s: {state}"
            time.sleep(2)
        # the automation was armed: heartbeats went on during the pause (at the start, then every HEARTBEAT_S)
        wait_for(lambda: heartbeats_of(str(run.run.id)) >= 3, 60, "three heartbeats of the paused run")
        resp = post(approvals, "approver", {"workload": mine, "run": str(run.run.id), "comment": "took my time"})
        assert resp.status_code == 200 and resp.json()["decision"] == "approved", resp.text
        answered = True
        answer = run.answer()
        assert (answer.approved, answer.comment) == (True, "took my time")
    finally:
        if not answered:  # never leave a paused run of the module's workload behind
            post(approvals, "approver", {"workload": mine, "approve": False, "comment": "cleanup"})
            run.thread.join(60)
