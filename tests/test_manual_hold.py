"""Replica ownership (issue 11, item 3): a manual scale of an autoscaled workload pins the count for
its hold time; the autoscaler leaves it alone meanwhile (reason ``manual_hold``) and says until when,
in the CLI output, the plan and the audit record; ``--hold 0`` hands the count back at once.
Real Swarm, Prometheus and Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.autoscale import autoscale
from flows.scale import scale
from scalewise import history
from scalewise.audit import Trigger
from scalewise.cli import app
from scalewise.local import LocalServer
from tests.support.prom_env import PromEnv
from tests.test_autoscale_triggers import replicas, set_load, workload

pytestmark = [pytest.mark.swarm, pytest.mark.prefect, pytest.mark.prom]

__all__ = ["workload"]  # the fixture (autoscaled Swarm service at 1 replica, load metric in Prometheus)

runner = CliRunner(env={"COLUMNS": "240"})


def test_a_manual_scale_pins_the_count_until_its_hold_ends(
    workload: str, prom_env: PromEnv, workloads_dir: Path, prefect_server: LocalServer
) -> None:
    set_load(prom_env, workload, 40.0)  # the autoscaler wants 4
    out = runner.invoke(app, ["scale-out", workload, "--by", "1", "--hold", "10m"])
    assert out.exit_code == 0, out.output
    assert f"autoscaler will leave {workload} at 2 until" in out.output
    assert replicas(workload) == 2

    (held,) = autoscale(workloads=[workload])  # type: ignore[misc]
    assert (held.outcome, held.reason, held.current) == ("held", "manual_hold", 2)
    assert f"autoscaler will leave {workload} at 2 until" in held.detail and "cli:" in held.detail
    assert replicas(workload) == 2
    plan = runner.invoke(app, ["plan", workload])
    assert plan.exit_code == 0, plan.output
    assert "manual_hold" in plan.output and f"autoscaler will leave {workload} at 2" in plan.output

    (rec,) = [e.record for e in history.fetch(workload) if e.record.operation == "scale-out"]
    assert any(f"autoscaler will leave {workload} at 2 until" in step for step in rec.plan), rec.plan

    bad = runner.invoke(app, ["scale", workload, "3", "--hold", "soon"])
    assert bad.exit_code == 2 and "--hold" in bad.output

    # --hold 0: no pin; the autoscaler owns the count again at its next evaluation
    rec0 = scale(workload=workload, replicas=3, hold_s=0, trigger=Trigger(kind="cli", actor="test"))
    assert any("no manual hold" in step for step in rec0.plan), rec0.plan
    (acted,) = autoscale(workloads=[workload])  # type: ignore[misc]
    assert (acted.outcome, acted.reason) == ("scaled", "scale_up"), acted
    assert replicas(workload) == 4
