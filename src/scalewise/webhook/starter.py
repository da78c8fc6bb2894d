"""Where runs start: one small interface, one Prefect implementation (``run_deployment``, timeout 0).

The Prefect implementation passes an idempotency key to the server, so the same alert or
``Idempotency-Key`` creates at most one flow run even across receiver restarts or replicas: the
server returns the run it already created for that key.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import SettingsContext
from prefect.deployments import arun_deployment


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

    async def start(
        self, deployment: str, parameters: dict[str, Any], idempotency_key: str | None, tags: list[str]
    ) -> StartedRun:
        if self._client is None:
            with self._context():
                async with get_client() as client:
                    return await self._start(client, deployment, parameters, idempotency_key, tags)
        with self._context():
            return await self._start(self._client, deployment, parameters, idempotency_key, tags)

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
