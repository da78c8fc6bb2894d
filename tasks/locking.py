"""One operation per workload at a time: a Prefect global concurrency limit per workload.

The limit (``scalewise-workload-<name>``, limit 1) is taken strictly: when the first attempt finds
it missing (the server then grants a lease on nothing), that lease is dropped, the limit created
and taken; a missing limit never runs unprotected. The common case is one request.

A holder that dies must not block the workload for long. Prefect's lease is the backstop (the
server's minimum lease is 60 s; it is renewed by Prefect every 45 s and revoked by the server's
repossessor once it expires), and scalewise adds a shorter one: the holder keeps a marker, the
Prefect Variable ``scalewise-lock-<name>`` holding the lease id, and beats it every
:data:`BEAT_S` seconds. A waiter that finds the limit taken watches the marker; when it has not
changed for :data:`STALE_S` seconds (seen on the waiter's own clock, or the server's ``updated``
time is that old), the holder is dead: the waiter releases that lease and takes the lock.
A long rollout keeps its lock as long as its process lives (both beats run in threads).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, VariableCreate, VariableUpdate
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from scalewise.errors import LockUnavailable
from scalewise.settings import lock_timeout_s

#: Prefect's lease on the slot (the server refuses less than 60 s).
LEASE_S = 60.0
#: The holder beats its marker this often.
BEAT_S = 5.0
#: A marker unchanged this long belongs to a dead holder.
STALE_S = 15.0
#: A waiter retries the slot this often (and looks at the marker in between).
POLL_S = 2.0

log = logging.getLogger("scalewise.locking")


def lock_name(workload: str) -> str:
    return f"scalewise-workload-{workload}"


def marker_name(workload: str) -> str:
    return f"scalewise-lock-{workload}"


def ensure_lock(workload: str) -> str:
    name = lock_name(workload)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


def _holder() -> dict[str, Any]:
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    return {
        "host": socket.gethostname()[:100],
        "pid": os.getpid(),
        "flow_run_id": str(run.id) if run else None,
        "since": datetime.now(UTC).isoformat(),
    }


def _read_marker(workload: str) -> tuple[dict[str, Any] | None, datetime | None]:
    with get_client(sync_client=True) as client:
        var = client.read_variable_by_name(marker_name(workload))
    if var is None or not isinstance(var.value, dict):
        return None, None
    return dict(var.value), var.updated


def _write_marker(workload: str, value: dict[str, Any], *, new: bool = False) -> None:
    """One request in the common case: an update of the holder's own marker (a beat), or with ``new`` a
    create (taking the lock: the last holder deleted its marker); two when that guess is wrong.
    (``Variable.set(overwrite=True)`` reads, updates and reads again: three.)"""
    import httpx

    name = marker_name(workload)
    with get_client(sync_client=True) as client:
        if new:
            try:
                client.create_variable(VariableCreate(name=name, value=value, tags=["scalewise-lock"]))
                return
            except ObjectAlreadyExists:  # left by a holder that died, or a waiter's take-over: replace it
                pass
        try:
            client.update_variable(VariableUpdate(name=name, value=value, tags=["scalewise-lock"]))
            return
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        try:
            client.create_variable(VariableCreate(name=name, value=value, tags=["scalewise-lock"]))
        except ObjectAlreadyExists:  # created meanwhile by another writer: ours is the newer value
            client.update_variable(VariableUpdate(name=name, value=value, tags=["scalewise-lock"]))


def _clear_marker(workload: str, lease_id: str) -> None:
    value, _ = _read_marker(workload)
    if value is not None and value.get("lease_id") == lease_id:
        with get_client(sync_client=True) as client, suppress(ObjectNotFound):
            client.delete_variable_by_name(marker_name(workload))


class _StaleWatch:
    """A waiter's view of the holder's marker: stale once unchanged for STALE_S."""

    def __init__(self, workload: str) -> None:
        self.workload = workload
        self.beat: tuple[Any, Any] | None = None
        self.since = time.monotonic()

    def dead_lease(self) -> str | None:
        """The lease id of a dead holder, if the marker says so."""
        value, updated = _read_marker(self.workload)
        if value is None or not value.get("lease_id"):
            return None  # no marker (a holder just starting, or an old-style lock): Prefect's lease applies
        beat = (value.get("lease_id"), value.get("beat"))
        now = time.monotonic()
        if beat != self.beat:
            self.beat, self.since = beat, now
        unchanged = now - self.since
        server_age = (datetime.now(UTC) - updated).total_seconds() if updated is not None else 0.0
        if unchanged >= STALE_S or server_age >= 2 * STALE_S:
            return str(value["lease_id"])
        return None


def _release(lease_id: uuid.UUID) -> None:
    """Give the slot back: one request on this thread's client (Prefect's ``release_concurrency_slots_with_lease``
    opens a new async client on its event-loop thread for it: a CSRF-token request and ~50 ms more)."""
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(lease_id)


def _take_over(workload: str, lease_id: str) -> None:
    log.warning("%s: the lock holder stopped beating for %ss; releasing its lease %s", workload, STALE_S, lease_id)
    with suppress(Exception):  # already released or expired: nothing to do
        _release(uuid.UUID(lease_id))
    with suppress(Exception):
        _clear_marker(workload, lease_id)


class _Missing(Exception):
    """The workload's concurrency limit does not exist yet."""


def _try_acquire(name: str) -> uuid.UUID | None:
    """One attempt at the slot: the lease id, or None when the slot is taken (HTTP 423).

    Raises :class:`_Missing` when the limit does not exist: the server then grants a lease on
    nothing, which is released here at once (a missing limit never runs unprotected)."""
    import httpx

    with get_client(sync_client=True) as client:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                return None
            raise
        data = response.json()
        if not data.get("limits"):
            with suppress(Exception):  # a lease on no limit holds nothing; it also expires on its own
                client.release_concurrency_slots_with_lease(uuid.UUID(str(data["lease_id"])))
            raise _Missing(name)
    return uuid.UUID(str(data["lease_id"]))


def _acquire(workload: str, name: str, wait: float) -> uuid.UUID:
    """The lease on the workload's slot. The common case is one request: the limit is created only
    when the first attempt finds it missing (once per workload, ever)."""
    deadline = time.monotonic() + wait
    watch = _StaleWatch(workload)
    created = False
    while True:
        try:
            lease_id = _try_acquire(name)
        except _Missing:
            if created:
                raise LockUnavailable(f"concurrency limit {name!r} is missing right after it was created") from None
            ensure_lock(workload)
            created = True
            continue
        if lease_id is not None:
            return lease_id
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name} still taken after {wait:.0f}s")
        dead = watch.dead_lease()
        if dead is not None:
            _take_over(workload, dead)
            continue
        time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))


class _Held:
    """What the holder knows of its own marker: when it was last written (monotonic), and whether a beat
    found it naming another holder (a waiter took the lock over)."""

    def __init__(self) -> None:
        self.written_at: float | None = None
        self.lost = False

    def wrote(self) -> None:
        self.written_at = time.monotonic()

    def surely_ours(self) -> bool:
        """A waiter takes over only a marker unchanged for STALE_S, so one written less than half of that
        ago is still ours: it can be deleted without reading it first."""
        return not self.lost and self.written_at is not None and time.monotonic() - self.written_at < STALE_S / 2


def _beat(workload: str, value: dict[str, Any], stop: threading.Event, held: _Held) -> None:
    n = 0
    while not stop.wait(BEAT_S):
        n += 1
        try:
            current, _ = _read_marker(workload)
            if current is not None and current.get("lease_id") != value["lease_id"]:
                log.error("%s: the lock marker now names another holder; this lease was taken over", workload)
                held.lost = True
                return
            _write_marker(workload, {**value, "beat": n})
            held.wrote()
        except Exception as exc:  # a missed beat is survivable; STALE_S is three beats
            log.warning("%s: lock marker beat failed: %s: %s", workload, type(exc).__name__, exc)


def _drop_marker(workload: str, lease_id: str, held: _Held) -> None:
    """Delete the holder's marker on release: one request when it is surely still ours, else read it and
    delete it only if it names this lease; never one that names another holder."""
    if held.lost:
        return
    if not held.surely_ours():
        _clear_marker(workload, lease_id)
        return
    with get_client(sync_client=True) as client, suppress(ObjectNotFound):
        client.delete_variable_by_name(marker_name(workload))


@contextmanager
def workload_lock(workload: str, timeout_s: float | None = None) -> Iterator[None]:
    name = lock_name(workload)
    wait = lock_timeout_s() if timeout_s is None else timeout_s
    try:
        lease_id = _acquire(workload, name, wait)
    except TimeoutError as exc:
        raise LockUnavailable(f"another operation on {workload!r} holds its lock; gave up after {wait:.0f}s") from exc
    value = {**_holder(), "lease_id": str(lease_id), "beat": 0}
    stop = threading.Event()
    held = _Held()
    ctx = contextvars.copy_context()  # Prefect's settings (API URL) live in context variables
    beat = threading.Thread(
        target=ctx.run, args=(_beat, workload, value, stop, held), daemon=True, name=f"lock-beat-{workload}"
    )
    try:
        # Before the operation does anything: a holder killed right after taking the lock must leave a
        # marker, or waiters fall back to Prefect's 60 s lease (test_lock_lease caught a marker written
        # asynchronously by the beat thread).
        _write_marker(workload, value, new=True)
        held.wrote()
        beat.start()
        with maintain_concurrency_lease(lease_id, LEASE_S, raise_on_lease_renewal_failure=True):
            yield
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(timeout=BEAT_S)
        with suppress(Exception):
            _drop_marker(workload, str(lease_id), held)
        try:
            _release(lease_id)
        except Exception as exc:  # taken over, or the server unreachable: the lease expires on its own
            log.warning("%s: could not release lease %s: %s: %s", workload, lease_id, type(exc).__name__, exc)
