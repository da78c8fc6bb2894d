"""One operation per workload at a time: a Prefect global concurrency limit per workload.

Used with ``strict=True``: without it, a missing limit silently runs unprotected. The limit is
created (limit 1) before it is taken, so it is never missing by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from scalewise.errors import LockUnavailable
from scalewise.settings import lock_timeout_s


def lock_name(workload: str) -> str:
    return f"scalewise-workload-{workload}"


def ensure_lock(workload: str) -> str:
    name = lock_name(workload)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


@contextmanager
def workload_lock(workload: str, timeout_s: float | None = None) -> Iterator[None]:
    name = ensure_lock(workload)
    wait = lock_timeout_s() if timeout_s is None else timeout_s
    acquired = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=wait, strict=True):
            acquired = True
            yield
    except TimeoutError as exc:
        if acquired:
            raise
        raise LockUnavailable(
            f"another operation on {workload!r} holds its lock; gave up after {wait:.0f}s"
        ) from exc
