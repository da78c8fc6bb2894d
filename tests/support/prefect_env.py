"""A real Prefect server (PostgreSQL, filesystem lease storage) for the test session, and a served runner.

``SCALEWISE_DATABASE=sqlite`` runs the suite against SQLite instead."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalewise.local import LocalServer, database_kind, free_port, local_postgres, pg_bindir, start_server

ROOT = Path(__file__).resolve().parents[2]
#: Where the migrated template cluster is kept between sessions (see :func:`migrated_database`).
TEMPLATE_HOME = Path(tempfile.gettempdir()) / "scalewise-test-pg-template"


def migrated_database(db_home: Path) -> None:
    """Put a copy of a PostgreSQL cluster that holds Prefect's migrated schema under ``db_home``.

    A new cluster costs initdb, Prefect's migrations and its block registration: 50-70 s at the start
    of a loaded run for every xdist worker (all at once) and for each test that starts a server of its
    own. The first caller builds a template once per Prefect and PostgreSQL version by starting a real
    server on it (under a file lock: the xdist workers start together), and every caller copies it,
    with a port and socket folder of its own. ``start_server`` then finds the schema at its head.
    """
    import prefect

    if database_kind() != "postgres":
        return
    key = f"prefect-{prefect.__version__}-pg-{pg_bindir().parts[-2]}"
    template = TEMPLATE_HOME / key
    TEMPLATE_HOME.mkdir(parents=True, exist_ok=True)
    with (TEMPLATE_HOME / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / "ready").exists():
            shutil.rmtree(template, ignore_errors=True)
            server = start_server(template / "home", port=free_port(), timeout_s=600, db_home=template)
            server.stop()
            server.stop_database()
            (template / "ready").touch()
    source, copy = local_postgres(template), local_postgres(db_home)
    db_home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source.data_dir), str(copy.data_dir)], check=True, timeout=300)
    (copy.data_dir / "postmaster.pid").unlink(missing_ok=True)
    with (copy.data_dir / "postgresql.conf").open("a") as conf:  # the last setting wins
        conf.write(f"unix_socket_directories = '{copy.data_dir}'\n")
    copy.write_settings(str(json.loads(source.secret_file.read_text())["password"]), free_port())


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # PostgreSQL runs as Debian's `postgres` user: its data lives in a folder of its own under /tmp, not
    # under pytest's basetemp (0700, reset by every pytest start, which would lock a running cluster out).
    db_home = Path(tempfile.mkdtemp(prefix="scalewise-test-pg-"))
    migrated_database(db_home)
    server = start_server(
        tmp_path_factory.mktemp("prefect-home"), port=free_port(), timeout_s=600, db_home=db_home
    )
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            from deployments.apply_automations import apply_run_health

            apply_run_health()  # zombie-run detection, as serve.py applies it
            yield server
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # send buffered run logs while the server is still up
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        server.stop()
        server.stop_database()
        shutil.rmtree(db_home, ignore_errors=True)


@pytest.fixture()
def workloads_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test workloads folder, selected through SCALEWISE_WORKLOADS like a user would."""
    folder = tmp_path / "workloads"
    folder.mkdir()
    monkeypatch.setenv("SCALEWISE_WORKLOADS", str(folder))
    return folder


class Served:
    """``deployments/serve.py`` running as a subprocess against the test server."""

    def __init__(self, api_url: str, workloads: Path, log: Path, *args: str) -> None:
        env = dict(os.environ, PREFECT_API_URL=api_url, SCALEWISE_WORKLOADS=str(workloads))
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "deployments" / "serve.py"), "--poll", "1", *args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_registered(self, names: list[str], timeout_s: float = 90) -> None:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout_s
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve.py exited:\n{self.log.read_text()[-3000:]}")
                have = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
                if all(n in have for n in names):
                    time.sleep(1.0)  # the runner starts polling right after registering
                    return
                time.sleep(0.5)
        raise TimeoutError(f"deployments {names} not registered:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        forget_project_deployments()


def forget_project_deployments() -> None:
    """Delete the project's deployments ("<flow>/scalewise") from the session's server, with their runs.

    Tests that serve or deploy them share one server per xdist worker: a deployment left with an
    interval schedule piles up due runs that the next test's runner would start all at once, and a
    deployment left bound to a work pool is not what the next runner serves."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployments = [d for d in client.read_deployments() if d.name == "scalewise"]
        if not deployments:
            return
        ids = [d.id for d in deployments]
        for dep in deployments:  # first: no more scheduled runs are made for them
            client.delete_deployment(dep.id)
        for run in client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids))):
            client.delete_flow_run(run.id)


def read_events(filter_: dict[str, Any], limit: int = 50) -> list[dict[str, Any]]:
    """Events stored by the current Prefect API (``POST /events/filter``), as JSON, oldest first."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {**filter_, "order": "ASC"}, "limit": limit}
    resp = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30).raise_for_status()
    return list(resp.json()["events"])


def task_runs(flow_run_id: str) -> list[Any]:
    """Every task run of a flow run (Prefect's TaskRun objects)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))))


def task_run_counts(flow_run_id: str) -> dict[str, int]:
    """How many times each task of a flow run ran (its name without the run suffix -> run_count)."""
    return {r.name.rsplit("-", 1)[0]: r.run_count for r in task_runs(flow_run_id)}
