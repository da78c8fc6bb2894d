"""Serve every scalewise operation as a Prefect deployment (runs from the UI, CLI, webhook, automations).

Usage: python deployments/serve.py [--deploy WORKLOAD ...] [--poll SECONDS]
The deployment names match prefect.yaml ("<flow>/scalewise"), so either way of running them works.
"""

from __future__ import annotations

import argparse
from typing import Any

from apply_automations import apply_run_health  # type: ignore[import-not-found]  # sibling file
from prefect import serve
from triggers import declared  # type: ignore[import-not-found]  # deployments/triggers.py (sibling)

from flows.analysis import analyze
from flows.autoscale import autoscale
from flows.backtest import backtest
from flows.deploy import deploy
from flows.rollback import rollback
from flows.rolling_update import rolling_update
from flows.scale import scale
from flows.scale_in import scale_in
from flows.scale_out import scale_out
from flows.train_forecast import train_forecast
from scalewise.audit import Trigger
from scalewise.settings import enable_heartbeats

DEPLOYMENT_NAME = "scalewise"
OPERATIONS: list[Any] = [
    deploy, scale, scale_out, scale_in, rolling_update, rollback, autoscale, train_forecast, backtest, analyze,
]


def entrypoint(f: Any) -> str:
    return f"{f.fn.__module__.replace('.', '/')}.py:{f.fn.__name__}"


def runner_deployments() -> list[Any]:
    # schedules and triggers come from prefect.yaml (deployments/triggers.py), the one definition
    return [
        f.to_deployment(
            name=DEPLOYMENT_NAME, tags=["scalewise"], description=(f.__doc__ or "").split("\n")[0],
            **declared(entrypoint(f), f.name),
        )
        for f in OPERATIONS
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploy", action="append", default=[], metavar="WORKLOAD", help="deploy first")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls for scheduled runs")
    args = parser.parse_args(argv)
    # Served runs are child processes: they read this when they start, and send heartbeats; the
    # run_health automation marks a run whose process died Crashed.
    enable_heartbeats()
    apply_run_health()
    for workload in args.deploy:
        deploy(workload=workload, reason="initial deploy", trigger=Trigger(kind="api", actor="serve.py"))
    serve(*runner_deployments(), query_seconds=args.poll)


if __name__ == "__main__":
    main()
