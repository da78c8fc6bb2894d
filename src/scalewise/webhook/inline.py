"""Inline runs: the receiver executes short scaling runs itself, as soon as they exist.

A deployment run started by the receiver normally waits for a runner (``serve``'s poll, a worker's
poll) and then for a new process; for a one-second scale that wait is most of the request -> write
latency (issue 10: accepted -> started 14-16 s). With ``run_inline`` in the receiver's config, the
receiver hands the run it just created to one of its own long-lived worker processes (started with the
receiver, Prefect imported once), which claims it (Scheduled -> Pending, the claim a worker makes, so no
runner also starts it) and executes it with Prefect's flow engine. It is the same run of the same
deployment, with its parameters, tags, trigger, task runs, logs and heartbeats: the run history cannot
tell it from a served run, except that it started sooner. Processes, not threads: flow runs in threads
of the receiver held its event loop behind the GIL (bench/webhook_bench.py --inline with threads, 5
requests/s: the 202 p95 went from 3.7 s to 13 s).

Order and bounds: the runs of one workload execute one after another, in the order accepted (as the
workload lock would make them anyway, without a thread blocked on the lock); at most ``limit``
workloads run at once (one per worker process). A run is claimed only when its turn comes, so a run still waiting stays
Scheduled: a runner may take it meanwhile (it then runs there; the claim here fails and it is
skipped), coalescing may cancel it (same), and if the receiver stops, the runs it had not claimed are
left to the runners. A run it had claimed and was executing when its process died is marked Crashed by
the run_health automation (no heartbeats), like any runner's. Nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from scalewise.webhook.starter import execute_run, prepare_process, warm

log = logging.getLogger("scalewise.webhook.inline")

CLAIM_MESSAGE = "claimed by the webhook receiver to run inline"


#: Executes one run by id to its end: its final state's name, or None if it was not run here.
Execute = Callable[[str], Awaitable[str | None]]


class WorkerProcesses:
    """Long-lived processes that execute runs (:func:`~scalewise.webhook.starter.execute_run`), one at a
    time each. Spawned (not forked from the receiver's threads and event loop), with the receiver's
    Prefect settings; a pool broken by a dead process is replaced at the next run."""

    def __init__(self, processes: int, environment: dict[str, str]) -> None:
        self._processes = processes
        self._environment = environment
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future[int]] = []

    def _ready(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=prepare_process,
                initargs=(self._environment,),
            )
        return self._pool

    def start(self) -> None:
        """Start the processes and import the flow engine in each, in the background."""
        pool = self._ready()
        self._warming = [pool.submit(warm) for _ in range(self._processes)]

    def warmed(self) -> bool:
        """Whether the processes started by :meth:`start` have imported the flow engine."""
        return all(f.done() for f in self._warming)

    def pids(self) -> list[int]:
        """The worker processes' ids (those started so far)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(processes)

    async def __call__(self, flow_run_id: str) -> str | None:
        """Execute the run in a worker process. If the pool broke (a worker process died: the run it was
        executing ends Crashed, as it sends no more heartbeats), once more on new processes: the claim
        in :func:`execute_run` makes that safe (a run already claimed or started is not run again)."""
        for attempt in (1, 2):
            pool = self._ready()
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    pool, execute_run, flow_run_id, CLAIM_MESSAGE
                )
            except BrokenProcessPool:
                if self._pool is pool:
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise
                log.warning("an inline worker process died; run %s goes to new processes", flow_run_id)
        raise AssertionError("unreachable")

    def close(self, wait: bool = True) -> None:
        """Stop the processes (``wait``: until they have exited; not while one still runs a flow)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=wait, cancel_futures=True)


class InlineRuns:
    """Orders accepted runs for ``execute`` (the receiver's worker processes): one at a time per
    workload, ``limit`` workloads at once."""

    def __init__(self, execute: Execute, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._execute = execute
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._queues: dict[str, deque[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: (flow_run_id, final state name) of every run executed here, newest last (bounded).
        self.done: deque[tuple[str, str]] = deque(maxlen=1000)

    def submit(self, workload: str, flow_run_id: str) -> None:
        """Queue an accepted run of ``workload``; returns at once (call from the event loop)."""
        if self._closing:
            return  # left Scheduled: a runner takes it
        queue = self._queues.get(workload)
        if queue is not None:
            queue.append(flow_run_id)
            return
        self._queues[workload] = deque([flow_run_id])
        task = asyncio.get_running_loop().create_task(self._drain(workload), name=f"inline-{workload}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> int:
        """Workloads with runs queued or executing here."""
        return len(self._queues)

    async def _drain(self, workload: str) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        queue = self._queues[workload]
        try:
            while queue and not self._closing:
                flow_run_id = queue.popleft()
                async with self._slots:
                    if not self._closing:
                        await self._run(workload, flow_run_id)
        finally:
            del self._queues[workload]

    async def _run(self, workload: str, flow_run_id: str) -> None:
        try:
            state = await self._execute(flow_run_id)
        except Exception as exc:  # a flow that does not load is left unclaimed: a runner takes the run
            log.warning(
                "inline run %s for %s failed to execute here: %s: %s",
                flow_run_id, workload, type(exc).__name__, str(exc)[:300],
            )
            return
        if state is None:
            log.info("run %s for %s was taken or ended elsewhere; not run inline", flow_run_id, workload)
            return
        self.done.append((flow_run_id, state))
        log.info("inline run %s for %s ended %s", flow_run_id, workload, state)

    async def close(self, timeout_s: float = 60.0) -> int:
        """Stop taking runs: the queued ones stay Scheduled for the runners; wait up to ``timeout_s``
        for the ones executing. Returns how many were still executing at the deadline."""
        self._closing = True
        for queue in self._queues.values():
            queue.clear()
        pending = set(self._tasks)
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout_s)
        if still:
            log.warning("%d inline runs still executing at shutdown; they end Crashed if this process dies", len(still))
        return len(still)
