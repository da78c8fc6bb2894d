"""prefect.yaml: every entrypoint loads, `prefect deploy --all` works against a real server, and runs
created the way the Prefect UI creates them have their parameters validated."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from scalewise.local import LocalServer
from tests.support.prefect_env import Served, forget_project_deployments
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[1]
PROJECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())
ENTRYPOINTS = [d["entrypoint"] for d in PROJECT["deployments"]]


def load(entrypoint: str) -> Any:
    file, _, name = entrypoint.partition(":")
    return load_flow_from_entrypoint(f"{ROOT / file}:{name}")


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_entrypoint_loads_with_described_parameters(entrypoint: str) -> None:
    file, _, _ = entrypoint.partition(":")
    assert (ROOT / file).is_file()
    flow = load(entrypoint)
    schema = flow.parameters.model_dump()
    assert "workload" in schema["required"] or "workloads" in schema["properties"]  # autoscale: a list, default all
    for name, prop in schema["properties"].items():
        assert prop.get("description") or prop.get("allOf") or "$ref" in str(prop), f"{entrypoint}: {name} undescribed"
    deployment = next(d for d in PROJECT["deployments"] if d["entrypoint"] == entrypoint)
    assert set(deployment.get("parameters", {})) <= set(schema["properties"])


def test_prefect_yaml_and_serve_script_declare_the_same_operations() -> None:
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import serve  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    served = {f.name for f in serve.OPERATIONS}
    declared = {load(e).name for e in ENTRYPOINTS}
    assert declared == served
    assert {"deploy", "scale", "scale-out", "scale-in", "rolling-update", "rollback"} <= declared


@pytest.fixture()
def own_deployments(prefect_server: LocalServer) -> Iterator[None]:
    """These tests register the project's deployments on the session's server: gone afterwards."""
    yield
    forget_project_deployments()


@pytest.mark.prefect
@pytest.mark.usefixtures("own_deployments")
def test_deploy_all_and_ui_style_runs(prefect_server: LocalServer) -> None:
    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url)
    prefect = str(Path(sys.executable).with_name("prefect"))
    pool = subprocess.run(
        [prefect, "--no-prompt", "work-pool", "create", "scalewise", "--type", "process", "--overwrite"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    out = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr

    api = prefect_server.api_url
    with httpx.Client(base_url=api, timeout=30) as http:
        deps = http.post("/deployments/filter", json={}).raise_for_status().json()
        names = {(d["name"], d["entrypoint"]) for d in deps}
        assert {("scalewise", e) for e in ENTRYPOINTS} <= names
        scale = next(d for d in deps if d["entrypoint"] == "flows/scale.py:scale")
        assert scale["enforce_parameter_schema"] is True
        # The UI's Run form posts to this endpoint; good parameters create a run...
        good = {"parameters": {"workload": "web", "replicas": 3}}
        ok = http.post(f"/deployments/{scale['id']}/create_flow_run", json=good)
        assert ok.status_code == 201, ok.text
        assert ok.json()["parameters"]["replicas"] == 3
        # ...bad ones are refused by the server with the field named, and no run is created.
        # (counted for this deployment: the scheduler adds the scheduled deployments' runs meanwhile)
        of_scale = {"deployments": {"id": {"any_": [scale["id"]]}}}
        before = http.post("/flow_runs/count", json=of_scale).json()
        for params, field in [
            ({"workload": "web", "replicas": -1}, "replicas"),
            ({"workload": "web", "replicas": "three"}, "replicas"),
            ({"workload": "Bad Name!", "replicas": 1}, "workload"),
        ]:
            bad = http.post(f"/deployments/{scale['id']}/create_flow_run", json={"parameters": params})
            assert bad.status_code in (409, 422), bad.text
            assert field in bad.text
        assert http.post("/flow_runs/count", json=of_scale).json() == before
        # the canary's steps are checked by the server too: the declared ones pass, a weight over 100 does not
        canary = next(d for d in deps if d["entrypoint"] == "flows/canary.py:canary")
        ok = http.post(f"/deployments/{canary['id']}/create_flow_run", json={})
        assert ok.status_code == 201, ok.text
        assert ok.json()["parameters"]["steps"][0] == {"set_weight": 50}
        bad = http.post(f"/deployments/{canary['id']}/create_flow_run",
                        json={"parameters": {"workload": "web", "image": "scalewise/busybox:2",
                                             "steps": [{"set_weight": 150}]}})
        assert bad.status_code in (409, 422), bad.text
        assert "150" in bad.text


@pytest.mark.prefect
@pytest.mark.usefixtures("own_deployments")
def test_serving_takes_over_pool_deployments_and_its_runs_load(
    prefect_server: LocalServer, workloads_dir: Path, tmp_path: Path
) -> None:
    """`prefect deploy --all` then `serve.py` (the two ways of running the same deployments): serving
    takes the pool-bound deployments over, and its runs load their code (before, Prefect's in-place
    update left them without path or pull steps and every served run crashed)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url)
    prefect = str(Path(sys.executable).with_name("prefect"))
    for cmd in (["work-pool", "create", "scalewise", "--type", "process", "--overwrite"], ["deploy", "--all"]):
        done = subprocess.run([prefect, "--no-prompt", *cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    srv = Served(prefect_server.api_url, workloads_dir, tmp_path / "serve.log")
    try:
        wait_for(lambda: "took over scale/scalewise (was in work pool scalewise)" in srv.log.read_text(), 120,
                 "serve.py's take-over line", srv.log)
        srv.wait_registered(["scale/scalewise"])  # registered again, by serve.py (take-over comes first)
        with get_client(sync_client=True) as client:
            dep = wait_for(lambda: _served(client.read_deployment_by_name("scale/scalewise")), 60,
                           "scale/scalewise registered by serve.py", srv.log)
            assert (dep.path, dep.pull_steps or []) == (".", [])
        # A run of an undeclared workload loads the flow and fails in it, naming the workload: not Crashed.
        run: Any = run_deployment("scale/scalewise", parameters={"workload": "nowhere", "replicas": 1}, timeout=240)
        assert run.state is not None and run.state.is_failed(), (run.state, srv.log.read_text()[-3000:])
        assert "nowhere" in str(run.state.message), run.state.message
    finally:
        srv.stop()


def _served(dep: Any) -> Any:
    return dep if dep.work_pool_name is None else None
