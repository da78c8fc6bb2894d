"""What the Docker adapters share: SDK error mapping, label names, durations (and the waiting loop, from waiting.py).

Imported by ``swarm.py`` (Swarm services) and ``engine/`` (plain containers); with them, the only
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
from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from scalewise.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    ScalewiseError,
    TransientError,
    UnreachableError,
)
from scalewise.orchestrators.waiting import poll_converged

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
#: A canary's replicas (engine containers, or the Swarm canary service and its tasks): never counted
#: as the stable's replicas.
ROLE_CANARY = "canary"
#: On a canary: its weight (percent), its whole rendered spec (``history.dump_template``) and its hash.
LABEL_CANARY_WEIGHT = "scalewise.canary-weight"
LABEL_CANARY_TEMPLATE = "scalewise.canary-template"
LABEL_CANARY_HASH = "scalewise.canary-hash"

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


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LABEL_CANARY_HASH",
    "LABEL_CANARY_TEMPLATE",
    "LABEL_CANARY_WEIGHT",
    "LABEL_MANAGED",
    "LABEL_REVISION",
    "LABEL_REVISIONS",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "LABEL_WORKLOAD",
    "NS",
    "ROLE_ANCHOR",
    "ROLE_CANARY",
    "ROLE_REPLICA",
    "is_connection_error",
    "map_docker_error",
    "mapped",
    "ns",
    "poll_converged",
]
