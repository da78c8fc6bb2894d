"""Where runs start: one small interface, one Prefect implementation (``run_deployment``, timeout 0).

The Prefect implementation passes an idempotency key to the server, so the same alert or
``Idempotency-Key`` creates at most one flow run even across receiver restarts or replicas: the
server returns the run it already created for that key.

For coalescing (``coalesce.py``) it also lists a deployment's unfinished receiver runs and cancels a
run only if no runner has claimed it (claim Scheduled -> Pending first, as a worker does), and reads
a run's state for duplicate answers.

For inline runs (``inline.py``), :func:`execute_run` loads a run's flow from its deployment's
entrypoint, claims the run the same way, and executes it with Prefect's own flow engine
(``run_flow``: the run, its task runs, logs, heartbeats and final state are the same as on a runner).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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
from prefect.states import Cancelled, Crashed, Pending

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
            if not run.claimed and not await self._claim(client, run.flow_run_id, message):
                return False
            done: OrchestrationResult[Any] = await client.set_flow_run_state(
                run.flow_run_id, Cancelled(message=message)
            )
            return done.status == SetStateStatus.ACCEPT

        return await self._call(claim_and_cancel)

    @staticmethod
    async def _claim(client: PrefectClient, flow_run_id: str, message: str) -> bool:
        claim: OrchestrationResult[Any] = await client.set_flow_run_state(flow_run_id, Pending(message=message))
        return claim.status == SetStateStatus.ACCEPT

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


#: Flows loaded in this process, by deployment entrypoint (an inline worker process keeps them).
_FLOWS: dict[str, Any] = {}


def prepare_process(environment: dict[str, str]) -> None:
    """An inline worker process's initializer: the receiver's Prefect settings (API URL and key,
    heartbeats) as environment variables, read when Prefect is imported here."""
    os.environ.update(environment)


def warm() -> int:
    """Import the flow engine in an inline worker process ahead of its first run; its pid."""
    importlib.import_module("prefect.flow_engine")
    return os.getpid()


def execute_run(flow_run_id: str, message: str) -> str | None:
    """Execute a deployment run here, to its end: load its flow (before claiming, so a flow that does
    not load leaves the run to a runner), claim it (Scheduled -> Pending; ``None`` if a runner took it
    or it ended meanwhile), run it with Prefect's flow engine. Returns the final state's name. Never
    leaves a claimed run Pending: if the engine itself fails, the run is set Crashed."""
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        if run.deployment_id is None:
            raise ValueError(f"flow run {flow_run_id} has no deployment to load its flow from")
        deployment = client.read_deployment(run.deployment_id)
        if not deployment.entrypoint:
            raise ValueError(f"deployment {deployment.name!r} has no entrypoint")
        flow = _FLOWS.get(deployment.entrypoint)
        if flow is None:
            flow = _FLOWS[deployment.entrypoint] = load_entrypoint(deployment.entrypoint, deployment.path)
        claim: OrchestrationResult[Any] = client.set_flow_run_state(run.id, Pending(message=message))
        if claim.status != SetStateStatus.ACCEPT:
            return None
    try:
        state: Any = run_flow(flow, flow_run=run, return_type="state")
        if asyncio.iscoroutine(state):  # an async flow
            state = asyncio.run(state)
    except BaseException as exc:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                run.id, Crashed(message=f"inline run failed: {type(exc).__name__}: {exc}"), force=True
            )
        raise
    return str(getattr(state, "name", None) or "Unknown")


def load_entrypoint(entrypoint: str, path: str | None = None) -> Any:
    """The flow at a deployment's entrypoint (``flows/scale.py:scale``): imported as its module
    (``flows.scale``) when the project is importable here, as runners and workers import it; else
    from the file, relative to the deployment's path or this process's working directory."""
    file, _, name = entrypoint.rpartition(":")
    if not file or not name:
        raise ValueError(f"entrypoint {entrypoint!r}: expected 'path/to/file.py:flow'")
    if file.endswith(".py") and not Path(file).is_absolute() and ".." not in Path(file).parts:
        try:
            module = importlib.import_module(file[:-3].replace("/", "."))
        except ImportError:
            pass
        else:
            flow = getattr(module, name, None)
            if flow is not None:
                return flow
    from prefect.flows import load_flow_from_entrypoint

    where = Path(path) / file if path and not Path(file).is_absolute() else Path(file)
    return load_flow_from_entrypoint(f"{where}:{name}")
