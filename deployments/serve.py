"""Serve every scalewise operation as a Prefect deployment (runs from the UI, CLI, webhook, automations).

Usage: python deployments/serve.py [--deploy WORKLOAD ...] [--poll SECONDS] [--limit N] [--drain SECONDS]
The deployment names match prefect.yaml ("<flow>/scalewise"), so either way of running them works, one
at a time: serving takes over deployments that `prefect deploy` bound to a work pool (see take_over).
SIGTERM drains: no new run is taken, the runs in flight finish (up to --drain seconds), then it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from apply_automations import apply_run_health  # sibling file (deployments/ is on sys.path)
from prefect.runner import Runner
from triggers import declared  # deployments/triggers.py (sibling)
from warm_start import enable as warm_start  # sibling file

from flows.abort import abort
from flows.analysis import analyze
from flows.autoscale import autoscale
from flows.backtest import backtest
from flows.canary import canary
from flows.deploy import deploy
from flows.promote import promote
from flows.rollback import rollback
from flows.rolling_update import rolling_update
from flows.scale import scale
from flows.scale_in import scale_in
from flows.scale_out import scale_out
from flows.train_forecast import train_forecast
from scalewise.audit import Trigger
from scalewise.settings import enable_heartbeats
from tasks.schedule import collapse_backlog

DEPLOYMENT_NAME = "scalewise"
#: Runs served at once (Prefect's runner default). 20 was tried: the "skipped (at capacity)" waits went,
#: but 20 runs at once on 2 cores waited on the CPU and each other's workload locks instead
#: (bench/webhook_bench.py request -> write p50 at 1/s 35 s -> 91 s, at 5/s 46 s -> 48 s; session 5 note).
RUN_LIMIT = 5
#: On SIGTERM, how long the runs in flight may take to finish before they are cancelled (Prefect's own
#: shutdown cancels them at once, leaving a rolling update half-done for the next operation to repair).
#: Give the process a stop timeout above it (``docker stop -t``; a systemd unit: TimeoutStopSec, and
#: KillMode=mixed so that only serve.py gets the SIGTERM, not the runs' processes).
DRAIN_S = 60.0
OPERATIONS: list[Any] = [
    deploy, scale, scale_out, scale_in, rolling_update, rollback, autoscale, train_forecast, backtest, analyze,
    canary, promote, abort,
]


def entrypoint(f: Any) -> str:
    return f"{f.fn.__module__.replace('.', '/')}.py:{f.fn.__name__}"


def deployment_options(f: Any) -> dict[str, Any]:
    # schedules and triggers come from prefect.yaml (deployments/triggers.py), the one definition
    return {
        "name": DEPLOYMENT_NAME, "tags": ["scalewise"], "description": (f.__doc__ or "").split("\n")[0],
        **declared(entrypoint(f), f.name),
    }


def runner_deployments() -> list[Any]:
    return [f.to_deployment(**deployment_options(f)) for f in OPERATIONS]


async def _submit_nothing(*args: Any, **kwargs: Any) -> None:
    """Stands in for the poller's submission once draining: the runs it fetched stay Scheduled."""


class DrainingRunner(Runner):
    """A Prefect ``Runner`` that drains on SIGTERM: it takes no new run from then on (a poll already under
    way submits nothing either), waits up to ``drain_s`` for the runs in flight (each until its process
    exits), then stops as Prefect's runner does, cancelling what is still running. Another SIGTERM while
    draining changes nothing; SIGKILL still kills. SIGINT (Ctrl-C, sent to the whole process group, runs
    included) is not drained. Prefect internals used here are checked by tests/unit/test_serve_drain.py."""

    def __init__(self, drain_s: float = DRAIN_S, **options: Any) -> None:
        super().__init__(**options)
        self.drain_s = drain_s
        self.draining = False

    def in_flight(self) -> int:
        """Runs submitted and not yet finished (the poller's own count: Pending until the process exits)."""
        return len(self._scheduled_run_poller._submitting_flow_run_ids)

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        if self.draining:
            return
        if not self.started or self.stopping or self._loop is None:
            sys.exit(0)
        self.draining = True
        self.stopping = True
        poller = self._scheduled_run_poller
        poller.stopping = True  # the poll loop fetches nothing more
        poller._submit_scheduled_flow_runs = _submit_nothing  # type: ignore[method-assign]  # nor a fetch under way
        self.execute_in_background(self._drain_then_stop).add_done_callback(self._stopped)

    async def _drain_then_stop(self) -> None:
        print(f"serve.py: SIGTERM, draining: no new runs; {self.in_flight()} in flight may take up to "
              f"{self.drain_s:g}s", flush=True)
        deadline = time.monotonic() + self.drain_s
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        left = self.in_flight()
        print(f"serve.py: drained ({left} run(s) still in flight, cancelled)" if left else "serve.py: drained",
              flush=True)
        await self.astop()

    def _stopped(self, done: Any) -> None:
        if not done.cancelled() and done.exception() is not None:
            print(f"serve.py: stopping failed: {done.exception()!r}", flush=True)


def serve_in_memory(query_seconds: float, limit: int = RUN_LIMIT, drain_s: float = DRAIN_S) -> None:
    """Prefect's ``serve()``, with each flow registered in memory (``Runner.add_flow``).

    ``prefect.serve(*deployments)`` registers deployments only, so the runner starts every run with
    ``python -m prefect.engine``, which loads the flow from its entrypoint in a new interpreter. With the
    flow in memory the runner starts the run from the flow object (``run_flow_in_subprocess``), which
    warm_start forks from a process that has imported everything already."""
    from prefect.exceptions import TerminationSignal

    runner = DrainingRunner(drain_s, pause_on_shutdown=True, query_seconds=query_seconds, limit=limit)
    for f in OPERATIONS:
        runner.add_flow(f, **deployment_options(f))
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        print(f"serve.py: {type(exc).__name__}, shutting down", flush=True)


def take_over(deployments: list[Any]) -> list[str]:
    """Delete the same-named deployments that `prefect deploy` bound to a work pool, and say so.

    Re-registering such a deployment from ``serve`` updates it in place and leaves it without a path
    or pull steps (Prefect 3.9's update payload carries neither), so every served run of it crashed
    with "Downloading flow code from storage at None". Serving and a worker pool are alternative ways
    of running the same deployments; whichever starts last owns them.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    taken: list[str] = []
    with get_client(sync_client=True) as client:
        for dep in deployments:
            full = f"{dep.flow_name}/{dep.name}"
            try:
                existing = client.read_deployment_by_name(full)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                client.delete_deployment(existing.id)
                taken.append(f"{full} (was in work pool {existing.work_pool_name})")
    for line in taken:
        print(f"serve.py: took over {line}", flush=True)
    return taken


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploy", action="append", default=[], metavar="WORKLOAD", help="deploy first")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls for scheduled runs")
    parser.add_argument("--limit", type=int, default=RUN_LIMIT, help=f"runs at once (default {RUN_LIMIT})")
    parser.add_argument("--drain", type=float, default=DRAIN_S,
                        help=f"on SIGTERM, seconds the runs in flight may take to finish (default {DRAIN_S:g})")
    args = parser.parse_args(argv)
    if args.limit < 1:  # refused before anything is deployed or registered
        parser.error(f"--limit must be at least 1, not {args.limit}")
    if not 0 <= args.drain <= 3600:
        parser.error(f"--drain must be between 0 and 3600 seconds, not {args.drain:g}")
    # Served runs are child processes: they read this when they start, and send heartbeats; the
    # run_health automation marks a run whose process died Crashed.
    enable_heartbeats()
    try:
        how = warm_start(f.fn.__module__ for f in OPERATIONS)
    except ValueError as exc:  # a bad SCALEWISE_RUN_START: say which and stop before anything
        raise SystemExit(f"serve.py: {exc}") from None
    print(f"serve.py: runs start by {how}", flush=True)
    apply_run_health()
    for workload in args.deploy:
        deploy(workload=workload, reason="initial deploy", trigger=Trigger(kind="api", actor="serve.py"))
    served = runner_deployments()
    take_over(served)
    try:
        cancelled = collapse_backlog(f"{autoscale.name}/{DEPLOYMENT_NAME}")
    except Exception as exc:  # serving matters more: the claim rule still makes a backlog skip
        print(f"serve.py: could not cancel the autoscale backlog ({exc}); serving anyway", flush=True)
        cancelled = []
    if cancelled:
        print(f"serve.py: cancelled {len(cancelled)} due autoscale runs of a backlog (the newest acts)", flush=True)
    serve_in_memory(args.poll, args.limit, args.drain)


if __name__ == "__main__":
    main()
