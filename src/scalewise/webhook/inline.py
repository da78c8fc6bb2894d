"""Inline runs: the receiver executes short scaling runs itself, as soon as they exist.

A deployment run started by the receiver normally waits for a runner (``serve``'s poll, a worker's
poll) and then for a new process; for a one-second scale that wait is most of the request -> write
latency (issue 10: accepted -> started 14-16 s). With ``run_inline`` in the receiver's config, the
receiver claims the run it just created (Scheduled -> Pending, the claim a worker makes, so no runner
also starts it) and executes it in its own process with Prefect's flow engine. It is the same run of
the same deployment, with its parameters, tags, trigger, task runs, logs and heartbeats: the run
history cannot tell it from a served run, except that it started sooner.

Order and bounds: the runs of one workload execute one after another, in the order accepted (as the
workload lock would make them anyway, without a thread blocked on the lock); at most ``limit``
workloads run at once. A run is claimed only when its turn comes, so a run still waiting stays
Scheduled: a runner may take it meanwhile (it then runs there; the claim here fails and it is
skipped), coalescing may cancel it (same), and if the receiver stops, the runs it had not claimed are
left to the runners. A run it had claimed and was executing when its process died is marked Crashed by
the run_health automation (no heartbeats), like any runner's. Nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from scalewise.webhook.starter import RunStarter

log = logging.getLogger("scalewise.webhook.inline")

CLAIM_MESSAGE = "claimed by the webhook receiver to run inline"


class InlineRuns:
    """Executes accepted runs in this process: one at a time per workload, ``limit`` workloads at once."""

    def __init__(self, starter: RunStarter, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._starter = starter
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
            run = await self._starter.load(flow_run_id)  # before the claim: a failure leaves it to a runner
            if not await self._starter.claim(flow_run_id, CLAIM_MESSAGE):
                log.info("run %s for %s was taken or ended elsewhere; not run inline", flow_run_id, workload)
                return
            state = await asyncio.to_thread(self._starter.execute, run)
        except Exception as exc:
            log.warning(
                "inline run %s for %s failed to execute here: %s: %s",
                flow_run_id, workload, type(exc).__name__, str(exc)[:300],
            )
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
