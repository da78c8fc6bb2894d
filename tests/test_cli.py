"""The `scalewise` CLI runs the same flows as the deployments, prints clear errors, exits non-zero."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from typer.testing import CliRunner

from scalewise import orchestrators
from scalewise.cli import app
from scalewise.local import LocalServer
from tests.support.docker_env import HTTP_CHECK, IMAGE_V1, unique_name

runner = CliRunner(env={"COLUMNS": "200"})


def test_validate_ok_and_bad(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["validate", str(Path(__file__).parents[1] / "workloads")])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    (tmp_path / "bad.yaml").write_text("name: web\ntarget: swarm\nimage: x:1\nreplicas: {min: 3, max: 2}\n")
    bad = runner.invoke(app, ["validate", str(tmp_path)])
    assert bad.exit_code == 1
    assert "bad.yaml: replicas: " in bad.output and "max (2) is below min (3)" in bad.output


@pytest.fixture()
def deployed(docker_engine: None, prefect_server: LocalServer, workloads_dir: Path) -> Iterator[str]:
    name = unique_name("cli")
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "target": "swarm", "image": IMAGE_V1,
        "healthcheck": {"command": HTTP_CHECK, "interval": "1s", "timeout": "1s", "retries": 2},
        "replicas": {"min": 1, "max": 3, "initial": 1}, "stop_grace_period": "1s",
    }))
    yield name
    for svc in docker.from_env().services.list(filters={"name": name}):
        svc.remove()
    orchestrators.reset()


def test_cli_operations_status_and_history(deployed: str) -> None:
    res = runner.invoke(app, ["deploy", deployed, "--reason", "first"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["scale", deployed, "2"])
    assert res.exit_code == 0, res.output
    assert "succeeded" in res.output and "1 x" in res.output and "2 x" in res.output
    bad = runner.invoke(app, ["scale", deployed, "7"])
    assert bad.exit_code == 1
    assert "replicas: 7 is outside [min=1, max=3]" in bad.output.replace("\n", " ")
    status = runner.invoke(app, ["status", deployed])
    assert status.exit_code == 0 and deployed in status.output
    hist = runner.invoke(app, ["history", deployed, "--json", "--since", "1h"])
    assert hist.exit_code == 0, hist.output
    records = json.loads(hist.output)
    assert [(r["operation"], r["outcome"]) for r in records] == [
        ("deploy", "succeeded"), ("scale", "succeeded"), ("scale", "failed")
    ]
    assert all(r["trigger"]["kind"] == "cli" and r["run_url"] for r in records)
    assert records[0]["reason"] == "first"
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["history", deployed, "--csv"]).output)))
    assert [r["operation"] for r in rows] == ["deploy", "scale", "scale"]
    assert rows[1]["before"].startswith("1 x") and rows[1]["after"].startswith("2 x")
    none = runner.invoke(app, ["history", deployed, "--json", "--since", "2999-01-01T00:00:00"])
    assert json.loads(none.output) == []
    assert runner.invoke(app, ["history", "--since", "yesterday-ish"]).exit_code == 2


def test_unknown_workload_is_a_clear_error(prefect_server: LocalServer, workloads_dir: Path) -> None:
    res = runner.invoke(app, ["scale-out", "ghost"])
    assert res.exit_code == 1
    assert "unknown workload 'ghost'" in res.output
