"""Evaluating without a flow run per workload: ``scalewise plan`` (:func:`plan`: what the autoscaler
would do now, nothing written) and the fast in-process loop ``scalewise autoscaler`` (:func:`run_loop`),
which evaluates every tick in process and calls the ``autoscale`` flow for each workload whose replica
count should change.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flows.autoscale import autoscale
from flows.autoscale_steps import counted, noted
from scalewise import autoscaler, selfmetrics, ticker
from scalewise.audit import Trigger
from scalewise.autoscaler import Evaluation, Held, Result
from scalewise.settings import workloads_path
from scalewise.spec import WorkloadSpec, load_workloads
from tasks.autoscale import PLAIN_READS
from tasks.policy_state import save_state

log = logging.getLogger("scalewise.autoscaler")


# -- dry-run without any write: `scalewise plan` ------------------------------------------------


def plan(workloads: list[str] | None = None) -> list[Result]:
    """What the autoscaler would do now and why, without writing anything (no run, lock or save)."""
    specs = load_workloads(workloads_path())
    chosen, skipped = autoscaler.select(specs, workloads)
    results = [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]
    for spec in chosen:
        ev = autoscaler.evaluate_workload(spec, PLAIN_READS)
        if isinstance(ev, Held):
            if ev.warning:
                log.warning("%s: %s", spec.name, ev.warning)
            results.append(ev.result)
        else:
            results.append(autoscaler.result_of(ev, "planned", spec))
    return results


# -- the fast in-process loop: `scalewise autoscaler` --------------------------------------------
#
# Measured (prefect 3.9.1, SQLite server, 2 cores): one `autoscale` flow call per tick costs 1-4 s
# (flow and task run records, events, logs, and the server answering busy writes with a retry delay),
# so a flow run per tick cannot hold a 2 s interval. Each tick therefore evaluates in process with
# the same functions the tasks wrap (orchestrator read, metric sources, persisted PolicyState, the
# policy) and saves the state; only a decision that changes replicas (or, in dry-run, any change)
# calls the `autoscale` flow for that workload, which re-reads, re-decides and acts under the lock
# with the full audit record.


def _evaluate_quietly(spec: WorkloadSpec) -> Evaluation | Held:
    """One evaluation without any Prefect run (the loop's no-change path); errors hold."""
    t0 = time.monotonic()
    ev = autoscaler.evaluate_workload(spec, PLAIN_READS)
    return noted(ev, log) if isinstance(ev, Held) else counted(ev, t0)


def loop_tick(
    workloads: list[str] | None,
    trigger: Trigger,
    *,
    dry_run: bool = False,
    max_observation_age_s: float | None = 60.0,
    parallel: int = 8,
) -> list[Result]:
    """One tick of the fast loop over the selected workloads (see the note above)."""
    from concurrent.futures import ThreadPoolExecutor

    observed = datetime.now(UTC)
    chosen, skipped = autoscaler.select(load_workloads(workloads_path()), workloads)
    results = [Result(workload=s.workload, outcome="skipped", reason=s.why) for s in skipped]
    # Prefect's settings (API URL) and run context live in context variables, which worker threads
    # do not inherit: each evaluation runs in a copy of this thread's context.
    contexts = [contextvars.copy_context() for _ in chosen]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(chosen) or 1))) as pool:
        evaluated = list(pool.map(lambda c, s: c.run(_evaluate_quietly, s), contexts, chosen))
    for spec, ev in zip(chosen, evaluated, strict=True):
        if isinstance(ev, Held):
            results.append(ev.result)
            continue
        d = ev.decision
        selfmetrics.observe_decision(spec.name, d.reason, d.changed, d.desired)
        log.info("%s", autoscaler.summary(spec.name, d))
        for line in autoscaler.describe(d):
            log.debug("  %s: %s", spec.name, line)
        if not d.changed:
            if not dry_run:
                try:
                    save_state(spec.name, d.state)
                except Exception as exc:
                    selfmetrics.ERRORS.labels(workload=spec.name, stage="save").inc()
                    log.error("%s: could not persist the policy state: %s", spec.name, exc)
            results.append(autoscaler.result_of(ev, "unchanged", spec))
            continue
        try:  # act (or plan) through the audited flow: lock, re-decision, apply, record, save
            done = autoscale(
                workloads=[spec.name], dry_run=dry_run, trigger=trigger, observed_at=observed,
                max_observation_age_s=max_observation_age_s, reason="autoscaler loop",
            )
            assert isinstance(done, list)  # only scheduled runs are ever skipped
            results.extend(done)
        except Exception as exc:
            log.warning("%s: autoscale run failed: %s: %s", spec.name, type(exc).__name__, exc)
            failed = autoscaler.result_of(ev, "failed", spec)
            failed.error = f"{type(exc).__name__}: {exc}"
            results.append(failed)
    return results


def run_loop(
    interval_s: float = 2.0,
    workloads: list[str] | None = None,
    *,
    dry_run: bool = False,
    max_ticks: int | None = None,
    stop: threading.Event | None = None,
    max_observation_age_s: float | None = 60.0,
    on_tick: Any = None,
) -> int:
    """Run :func:`loop_tick` in this process every ``interval_s`` until stopped; returns ticks run.

    A tick that overruns the interval delays the next one (ticks never overlap).
    """
    trigger = Trigger(
        kind="autoscaler", actor=f"scalewise-autoscaler@{socket.gethostname()}"[:200],
        detail=f"in-process loop every {interval_s:g}s",
    )

    def tick(n: int) -> None:
        t0 = time.monotonic()
        results: list[Result] | None = None
        try:
            results = loop_tick(workloads, trigger, dry_run=dry_run, max_observation_age_s=max_observation_age_s)
        except Exception as exc:
            selfmetrics.ERRORS.labels(workload="*", stage="tick").inc()
            log.warning("autoscale tick failed: %s: %s", type(exc).__name__, exc)
        selfmetrics.TICK_SECONDS.observe(time.monotonic() - t0)
        if on_tick is not None:
            on_tick(n, results)

    return ticker.every(interval_s, tick, max_ticks=max_ticks, stop=stop)
