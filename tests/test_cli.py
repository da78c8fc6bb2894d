"""The `scalewise` CLI runs the same flows as the deployments, prints clear errors, exits non-zero."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from typer.testing import CliRunner

from scalewise import orchestrators
from scalewise.cli import app
from scalewise.local import LocalServer
from tests.support.docker_env import IMAGE_V1, health_check, unique_name

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
        "healthcheck": health_check(),
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


# --- servers that do not answer: which one, and how to start one or point to one ------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI in a process of its own (what a user runs), with ``env`` on top of ours."""
    return subprocess.run(
        [sys.executable, "-m", "scalewise.cli", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def assert_clear_failure(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "RuntimeError" not in text, text
    flat = " ".join(text.split())
    for part in expected:
        assert part in flat, (part, text)


def test_prefect_server_unreachable_names_it_and_how_to_start_one(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text("name: web\ntarget: swarm\nimage: scalewise/busybox:1\n")
    url = f"http://127.0.0.1:{closed_port()}/api"
    for args in (["scale", "web", "2"], ["rollout", "web", "scalewise/busybox:2"], ["history"], ["plan"]):
        proc = cli(*args, PREFECT_API_URL=url, SCALEWISE_WORKLOADS=str(tmp_path))
        assert_clear_failure(
            proc, f"Prefect server unreachable at {url}", "Connection refused", "scalewise server",
            "scripts/up.sh", "PREFECT_API_URL",
        )


def test_docker_engine_unreachable_names_docker_host_and_the_start_script(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    (tmp_path / "web.yaml").write_text("name: web\ntarget: docker\nimage: scalewise/busybox:1\n")
    (tmp_path / "svc.yaml").write_text("name: svc\ntarget: swarm\nimage: scalewise/busybox:1\n")
    host = f"tcp://127.0.0.1:{closed_port()}"
    env = {"DOCKER_HOST": host, "SCALEWISE_WORKLOADS": str(tmp_path), "PREFECT_API_URL": prefect_server.api_url}
    expected = (f"Docker engine unreachable at {host}", "Connection refused", "scripts/start-docker.sh", "DOCKER_HOST")
    assert_clear_failure(cli("status", **env), *expected)
    assert_clear_failure(cli("scale", "svc", "2", **env), *expected)  # through the flow (after the task's retries)


def test_kubernetes_apiserver_unreachable_names_it_and_kubeconfig(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "k.yaml").write_text("name: kweb\ntarget: kubernetes\nimage: scalewise/busybox:1\n")
    proc = cli("status", KUBECONFIG=str(kubeconfig), SCALEWISE_WORKLOADS=str(tmp_path / "wl"))
    assert_clear_failure(
        proc, f"Kubernetes apiserver unreachable at {server}", "Connection refused", f"KUBECONFIG (now {kubeconfig})"
    )
