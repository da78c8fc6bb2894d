"""prefect.yaml: every entrypoint loads, `prefect deploy --all` works against a real server, and runs
created the way the Prefect UI creates them have their parameters validated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from scalewise.local import LocalServer

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


@pytest.mark.prefect
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
        before = http.post("/flow_runs/count", json={}).json()
        for params, field in [
            ({"workload": "web", "replicas": -1}, "replicas"),
            ({"workload": "web", "replicas": "three"}, "replicas"),
            ({"workload": "Bad Name!", "replicas": 1}, "workload"),
        ]:
            bad = http.post(f"/deployments/{scale['id']}/create_flow_run", json={"parameters": params})
            assert bad.status_code in (409, 422), bad.text
            assert field in bad.text
        assert http.post("/flow_runs/count", json={}).json() == before
