"""Where runs start: one small interface, one Prefect implementation (``run_deployment``, timeout 0).

The Prefect implementation passes an idempotency key to the server, so the same alert or
``Idempotency-Key`` creates at most one flow run even across receiver restarts or replicas: the
server returns the run it already created for that key.

For coalescing (``coalesce.py``) it also lists a deployment's unfinished receiver runs and cancels a
run only if no runner has claimed it (claim Scheduled -> Pending first, as a worker does), and reads
a run's state for duplicate answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import SettingsContext
from prefect.deployments import arun_deployment
from prefect.states import Cancelled, Pending

from scalewise.webhook.coalesce import QueuedRun, parse_superseded

T = TypeVar("T")


@dataclass(frozen=True)
class StartedRun:
    flow_run_id: str
    created: datetime | None


class RunStarter(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def start(
        self, deployment: str, parameters: dict[str, Any], idempotency_key: str | None, tags: list[str]
    ) -> StartedRun:
        """Create the flow run (it is in the orchestrator's database when this returns)."""
        ...

    async def queued(self, deployment: str, tag: str) -> list[QueuedRun]:
        """The runs of ``deployment`` tagged ``tag`` that have not finished, newest first."""
        ...

    async def cancel_unstarted(self, run: QueuedRun, message: str) -> bool:
        """Cancel a run only if it has not started (no runner has claimed it); True if cancelled."""
        ...

    async def state(self, flow_run_id: str) -> tuple[str, str | None]:
        """The run's state name and message."""
        ...


class PrefectStarter:
    """Creates deployment runs through the Prefect API; the served runner executes them.

    The Prefect settings (API URL, key) are the ones current where the starter is built: uvicorn may
    run the app in another thread, where Prefect would otherwise see only its import-time settings.
    """

    def __init__(self) -> None:
        self._client: PrefectClient | None = None
        self._settings = SettingsContext.get()

    def _context(self) -> AbstractContextManager[object]:
        return self._settings.model_copy() if self._settings is not None else nullcontext()

    async def open(self) -> None:
        if self._client is None:
            with self._context():
                client = get_client()
                self._client = await client.__aenter__()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)

    async def _call(self, use: Callable[[PrefectClient], Awaitable[T]]) -> T:
        if self._client is None:
            with self._context():
                async with get_client() as client:
                    return await use(client)
        with self._context():
            return await use(self._client)

    async def start(
        self, deployment: str, parameters: dict[str, Any], idempotency_key: str | None, tags: list[str]
    ) -> StartedRun:
        return await self._call(lambda c: self._start(c, deployment, parameters, idempotency_key, tags))

    async def queued(self, deployment: str, tag: str) -> list[QueuedRun]:
        flow_name, _, deployment_name = deployment.partition("/")

        async def read(client: PrefectClient) -> list[QueuedRun]:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
                    ),
                    tags=FlowRunFilterTags(all_=[tag]),
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=200,  # the API's maximum: the newest 200 are the ones that matter
            )
            out = []
            for run in runs:
                state = run.state
                if state is None:
                    continue
                # Scheduled (and never run: AwaitingRetry is Scheduled too), or Pending as claimed by a
                # receiver that stopped between its claim and its cancel (the supersede message marks it)
                claimed = state.type == StateType.PENDING and parse_superseded(state.message) is not None
                unstarted = claimed or (state.type == StateType.SCHEDULED and run.run_count == 0)
                out.append(QueuedRun(str(run.id), run.created, dict(run.parameters), list(run.tags), unstarted,
                                     claimed, state.message))
            return out

        return await self._call(read)

    async def cancel_unstarted(self, run: QueuedRun, message: str) -> bool:
        """Claim the run the way a worker does before submitting it (Scheduled -> Pending; Prefect aborts
        Pending from Pending, Running, Cancelling or Cancelled, so exactly one claimant wins and a
        runner never starts a run claimed here), then cancel it (Pending -> Cancelled). A run already
        claimed by a runner is left alone. A claim left by a receiver that stopped before its cancel
        carries the message: the next pass over the workload's queue (any replica) cancels it."""

        async def claim_and_cancel(client: PrefectClient) -> bool:
            if not run.claimed:
                claim: OrchestrationResult[Any] = await client.set_flow_run_state(
                    run.flow_run_id, Pending(message=message)
                )
                if claim.status != SetStateStatus.ACCEPT:
                    return False
            done: OrchestrationResult[Any] = await client.set_flow_run_state(
                run.flow_run_id, Cancelled(message=message)
            )
            return done.status == SetStateStatus.ACCEPT

        return await self._call(claim_and_cancel)

    async def state(self, flow_run_id: str) -> tuple[str, str | None]:
        async def read(client: PrefectClient) -> tuple[str, str | None]:
            run = await client.read_flow_run(UUID(flow_run_id))
            if run.state is None:
                return ("Unknown", None)
            return (run.state.name or run.state.type.value, run.state.message)

        return await self._call(read)

    @staticmethod
    async def _start(
        client: PrefectClient,
        deployment: str,
        parameters: dict[str, Any],
        idempotency_key: str | None,
        tags: list[str],
    ) -> StartedRun:
        run = await arun_deployment(
            name=deployment,
            client=client,
            parameters=parameters,
            timeout=0,
            idempotency_key=idempotency_key,
            as_subflow=False,
            tags=tags,
        )
        return StartedRun(str(run.id), run.created)
