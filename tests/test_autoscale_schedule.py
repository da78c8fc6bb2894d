"""Scheduled autoscaling acts however late its runs start, and a backlog after an outage collapses
into one acting run (issue 11, item 2). Real Swarm, Prometheus, Prefect server and served runner.

The runner (deployments/serve.py, interval 3 s) is SIGKILLed like a crashed host, so its schedule
stays active and due runs pile up (Late); then it is started again. At most one backlog run acts;
serve.py cancels the others before its runner starts (no process is started for them: "superseded
backlog"), or one that slipped through ends Completed in a state named "Skipped" with the reason; the
workload is scaled exactly once.
Run it with ``stress-ng --cpu 2`` in the background too: lateness must never make it give up.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun

from scalewise import history
from scalewise.local import LocalServer
from tests.support.prefect_env import Served
from tests.support.procs import kill_tree
from tests.support.prom_env import PromEnv
from tests.test_autoscale_triggers import DEPLOYMENT, replicas, set_load, wait_for, workload

pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom]

__all__ = ["workload"]  # the fixture, shared with test_autoscale_triggers

BACKLOG = 4


def scheduled_runs(deployment_id: Any, due_by: datetime | None = None) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(before_=due_by) if due_by else None  # type: ignore[arg-type]
            ),
            limit=200,
        )
    return [r for r in runs if r.auto_scheduled]


def autoscale_actions(name: str) -> list[Any]:
    """Finished autoscale actions (an action shows as in_progress while it runs)."""
    return [
        e.record for e in history.fetch(name) if e.record.operation == "autoscale" and e.record.outcome != "in_progress"
    ]


@pytest.mark.timeout(1500)  # several bounded waits in a row, each sized for a loaded machine
def test_a_backlog_of_late_scheduled_runs_collapses_into_one_acting_run(
    workload: str, prom_env: PromEnv, workloads_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    prefect_server: LocalServer,
) -> None:
    monkeypatch.setenv("SCALEWISE_AUTOSCALE_INTERVAL", "3s")
    first = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve-1.log")
    try:
        first.wait_registered([DEPLOYMENT])
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(DEPLOYMENT)

        def one_finished() -> bool:
            return any(r.state is not None and r.state.is_final() for r in scheduled_runs(dep.id))

        wait_for(one_finished, 300, "a first scheduled run to finish (nothing to do: load on target)", first.log)
    finally:
        kill_tree(first.proc.pid)  # an outage: the runner dies without pausing its schedule
        first.proc.wait(timeout=30)
    assert autoscale_actions(workload) == []
    set_load(prom_env, workload, 40.0)  # 4 replicas wanted from now on

    def backlog() -> list[FlowRun]:
        now = datetime.now(UTC)
        due = [r for r in scheduled_runs(dep.id, due_by=now) if r.state is not None and r.state.is_scheduled()]
        return due if len(due) >= BACKLOG else []

    late = wait_for(backlog, 180, f"{BACKLOG} due runs piling up while no runner is up")
    late_ids = {r.id for r in late}

    second = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve-2.log")
    try:
        second.wait_registered([DEPLOYMENT])

        def settled() -> list[FlowRun] | None:
            with get_client(sync_client=True) as client:
                runs = [client.read_flow_run(i) for i in late_ids]
            return runs if all(r.state is not None and r.state.is_final() for r in runs) else None

        done = wait_for(settled, 400, "every backlog run to finish", second.log)
        states = [r.state for r in done if r.state is not None]
        # at most one acted; serve.py cancelled the older ones before starting (no process for them);
        # any other started and skipped (Completed, "Skipped", with the reason)
        acted = [st for st in states if st.is_completed() and st.name != "Skipped"]
        skipped = [st for st in states if st.is_completed() and st.name == "Skipped"]
        cancelled = [st for st in states if st.is_cancelled()]
        assert len(acted) <= 1 and len(acted) + len(skipped) + len(cancelled) == len(done), states
        assert all("superseded" in (st.message or "") for st in skipped + cancelled), states
        assert len(cancelled) >= BACKLOG - 1, states
        # serve.py says so once it has cancelled every due run, which may be after the late ones were
        # (runs fell due while it cancelled): wait for the line rather than read the log once
        wait_for(lambda: "due autoscale runs of a backlog" in second.log.read_text(), 120,
                 "serve.py to report the cancelled backlog", second.log)

        (act,) = wait_for(lambda: autoscale_actions(workload) or None, 300, "the one scheduled action", second.log)
        assert act.trigger.kind == "schedule"
        assert (act.before.replicas, act.after.replicas) == (1, 4)
        assert replicas(workload) == 4
        # later scheduled runs keep running and find nothing to do: still exactly one action
        acted_at = time.monotonic()

        def later_runs_done() -> bool:
            now = datetime.now(UTC)
            fresh = [
                r for r in scheduled_runs(dep.id, due_by=now)
                if r.id not in late_ids and r.state is not None and r.state.is_final()
                and r.end_time is not None and r.end_time.timestamp() > time.time() - (time.monotonic() - acted_at)
            ]
            return len(fresh) >= 2

        wait_for(later_runs_done, 300, "two more scheduled runs after the action", second.log)
        # exactly one run changed the replicas (a later run may record a finished no-change or failed
        # attempt, e.g. a lock or metric timeout on a loaded machine: not an action on the workload)
        records = autoscale_actions(workload)
        changed = [r for r in records if r.outcome == "succeeded" and r.before.replicas != r.after.replicas]
        assert len(changed) == 1, [(r.outcome, r.reason_code, r.before, r.after, r.error) for r in records]
    finally:
        second.stop()
