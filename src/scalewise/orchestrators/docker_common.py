"""What the Docker adapters share: SDK error mapping, label names, durations, the waiting loop.

Imported by ``swarm.py`` (Swarm services) and ``engine.py`` (plain containers); with them, the only
modules (besides ``metrics/docker_stats.py``) that import the ``docker`` SDK.

Error mapping (kopf-style; only ``TransientError`` is ever retried)
-------------------------------------------------------------------
==========================================================  =====================================
What the SDK raised                                         What the adapter raises
==========================================================  =====================================
``requests`` ConnectionError / Timeout (connect or read)    UnreachableError (a TransientError
``DockerException`` wrapping a connection error             naming DOCKER_HOST and how to start one)
(e.g. the engine cannot be reached when the client is
created)
APIError whose message says "update out of sequence"        ConflictError
(Swarm: another writer changed the service in between)
APIError 5xx (anything else)                                TransientError
APIError 404 / ``NotFound``                                 NotFoundError
``ImageNotFound``                                           PermanentError
APIError 409                                                ConflictError
APIError 401 / 403                                          ForbiddenError (a PermanentError)
APIError other 4xx                                          PermanentError (server's message)
any other ``DockerException``, ``requests`` error or        Swarm: PermanentError;
``OSError``                                                 engine (``broad_transient``):
                                                            TransientError
==========================================================  =====================================

The last row is the one difference between the adapters: the engine adapter treats every transport
or SDK failure that is not an HTTP answer as the engine being unreachable (``broad_transient=True``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from scalewise.errors import (
    ConflictError,
    ConvergenceTimeout,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    ScalewiseError,
    TransientError,
    UnreachableError,
)
from scalewise.model import ConvergeResult, WorkloadState
from scalewise.orchestrators.base import ProgressFn

# Labels scalewise puts on the Docker objects it owns (service or containers); same names, same
# meaning in both adapters, so a workload's revision history reads the same on either.
LABEL_WORKLOAD = "scalewise.workload"
LABEL_MANAGED = "scalewise.managed"
LABEL_REVISIONS = "scalewise.revisions"
LABEL_REVISION = "scalewise.revision"
LABEL_SPEC_HASH = "scalewise.spec-hash"
LABEL_ROLE = "scalewise.role"
ROLE_REPLICA = "replica"
ROLE_ANCHOR = "anchor"

DEFAULT_TIMEOUT_S = 30
NS = 1_000_000_000


def ns(seconds: float) -> int:
    """Seconds as the nanoseconds the Docker API takes for durations."""
    return round(seconds * NS)


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` or one of its causes/contexts (10 deep at most) is a connection failure."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if isinstance(exc, ConnectionError | TimeoutError | FileNotFoundError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def unreachable(what: str, exc: BaseException) -> UnreachableError:
    """The engine did not answer: name where it was looked for and how to start one."""
    return UnreachableError(
        "Docker engine",
        os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
        "start it with scripts/start-docker.sh, or set DOCKER_HOST to a running engine",
        detail=str(exc),
        what=what,
    )


def map_docker_error(exc: BaseException, what: str, *, broad_transient: bool = False) -> ScalewiseError:
    """Translate an SDK/transport exception into the scalewise taxonomy (see the module table)."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return unreachable(what, exc)
    if isinstance(exc, docker.errors.ImageNotFound):
        return PermanentError(f"{what}: image not found: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        message = str(exc.explanation or exc)
        if "out of sequence" in message:
            return ConflictError(f"{what}: the service changed since it was read ({message})")
        if status >= 500:
            return TransientError(f"{what}: Docker engine error {status}: {message}")
        if status == 404:
            return NotFoundError(f"{what}: not found: {message}")
        if status == 409:
            return ConflictError(f"{what}: conflict: {message}")
        if status in (401, 403):
            return ForbiddenError(f"{what}: refused ({status}): {message}")
        if status:
            return PermanentError(f"{what}: refused ({status}): {message}")
        return TransientError(f"{what}: Docker engine error: {message}")
    if isinstance(exc, docker.errors.DockerException):
        # The SDK raises a bare DockerException when it cannot even fetch the API version.
        if broad_transient or is_connection_error(exc.__cause__ or exc.__context__) or "Connection" in str(exc):
            return unreachable(what, exc)
        return PermanentError(f"{what}: {exc}")
    if is_connection_error(exc) or (
        broad_transient and isinstance(exc, requests.exceptions.RequestException | OSError)
    ):
        return unreachable(what, exc)
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def mapped(what: str, *, broad_transient: bool = False) -> Iterator[None]:
    """Re-raise SDK/transport errors of the block as :func:`map_docker_error` maps them."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise map_docker_error(exc, what, broad_transient=broad_transient) from exc


def poll_converged(
    read: Callable[[], WorkloadState],
    settled: Callable[[WorkloadState, float], ConvergeResult | None],
    *,
    start: float,
    timeout_s: float,
    poll_s: float,
    on_progress: ProgressFn | None,
    progress: Callable[[WorkloadState], str],
) -> ConvergeResult:
    """The loop of ``wait_converged``: ``read`` (each state goes to ``on_progress``) until
    ``settled(state, elapsed)`` returns a result; past ``start + timeout_s`` a ``timeout`` result
    whose detail is ``after <timeout_s>s: <progress(state)>``. Sleeps ``poll_s`` between reads,
    never past the deadline. What counts as settled is each adapter's own.

    A read that fails with a :class:`TransientError` (the engine restarting, a dropped connection)
    is absorbed until the deadline: the wait is bounded by its own limit and never retried. If no
    read succeeded by then, :class:`ConvergenceTimeout` names the last error."""
    deadline = start + max(0.0, timeout_s)
    state: WorkloadState | None = None
    while True:
        failure: TransientError | None = None
        try:
            state = read()
        except TransientError as exc:
            failure = exc
        elapsed = time.monotonic() - start
        if failure is None and state is not None:
            if on_progress is not None:
                on_progress(state)
            result = settled(state, elapsed)
            if result is not None:
                return result
        now = time.monotonic()
        if now >= deadline:
            if state is None:
                raise ConvergenceTimeout(
                    f"no state read within {timeout_s:g}s" + (f" (last error: {failure})" if failure else "")
                )
            last_error = f"; last read failed: {failure}" if failure is not None else ""
            return ConvergeResult(
                converged=False,
                state=state,
                reason="timeout",
                detail=f"after {timeout_s:g}s: {progress(state)}{last_error}",
                elapsed_s=elapsed,
            )
        time.sleep(max(0.0, min(poll_s, deadline - now)))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LABEL_MANAGED",
    "LABEL_REVISION",
    "LABEL_REVISIONS",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "LABEL_WORKLOAD",
    "NS",
    "ROLE_ANCHOR",
    "ROLE_REPLICA",
    "is_connection_error",
    "map_docker_error",
    "mapped",
    "ns",
    "poll_converged",
]
