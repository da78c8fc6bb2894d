"""Error taxonomy shared by every layer.

The split mirrors kopf's table of retried API errors: only :class:`TransientError` is ever retried
(connection errors, request timeouts, 5xx). A bounded wait that runs out (:class:`ConvergenceTimeout`)
is not a transient error: it is never retried. Everything else fails at once with a message that names what
was wrong, so a retried task never repeats a write that was refused for a reason.
"""

from __future__ import annotations

import re

_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


class ScalewiseError(Exception):
    """Base class of every error scalewise raises on purpose."""


class TransientError(ScalewiseError):
    """The orchestrator or a metric source could not be reached or answered 5xx/timeout: retry."""


class UnreachableError(TransientError):
    """A server (the Docker engine, the Kubernetes apiserver, Prometheus, Prefect) did not answer at all.

    The message names the server, the address it was looked for at and how to start one or point to
    another: ``<what>: Docker engine unreachable at unix:///var/run/docker.sock (<detail>): <hint>``.
    """

    def __init__(self, server: str, address: str, hint: str, detail: str = "", what: str = "") -> None:
        self.server = server
        self.address = address
        self.hint = hint
        errno = _ERRNO_RE.search(detail)
        detail = errno.group(0) if errno else detail  # "[Errno 111] Connection refused", not the SDK's wrapping
        head = f"{what}: " if what else ""
        tail = f" ({detail[:300]})" if detail else ""
        super().__init__(f"{head}{server} unreachable at {address}{tail}: {hint}")


class PermanentError(ScalewiseError):
    """A 4xx-class refusal or a bad request: retrying cannot help."""


class ConflictError(ScalewiseError):
    """A write carried a stale observed version and was rejected (HTTP 409 / Swarm 'out of sequence').

    Callers re-read the state and decide again; they never blindly resend the same write.
    """


class NotFoundError(PermanentError):
    """The workload does not exist on its target."""


class ForbiddenError(PermanentError):
    """The orchestrator refused the action for lack of permission (HTTP 401/403)."""


class OwnershipError(PermanentError):
    """Another controller (an HPA, KEDA, a different manager) already scales this workload."""


class SpecError(PermanentError):
    """A workload spec, a flow parameter or a request is invalid.

    ``source`` names the file (or 'parameter', 'request'), ``field`` the dotted field path.
    """

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")


class RolloutFailed(ScalewiseError):
    """A rolling update did not converge (health check failed, deadline passed) and was rolled back."""

    def __init__(self, workload: str, reason: str, rolled_back_to: int | None = None) -> None:
        self.workload = workload
        self.reason = reason
        self.rolled_back_to = rolled_back_to
        tail = f"; rolled back to revision {rolled_back_to}" if rolled_back_to is not None else ""
        super().__init__(f"rolling update of {workload!r} failed: {reason}{tail}")


class ConvergenceTimeout(ScalewiseError):
    """The workload did not reach the desired state within the bounded wait.

    Never transient, never retried: a wait carries its own deadline, and retrying it would multiply
    that bound. Transient read errors inside a wait are absorbed by the wait loop until its deadline.
    """


class StaleObservation(PermanentError):
    """A run was asked to act on an observation older than the configured maximum age."""


class LockUnavailable(PermanentError):
    """The per-workload concurrency limit is missing or could not be acquired."""


class AnalysisFailed(ScalewiseError):
    """An analysis ended Failed, Error or Inconclusive (not approved), or its approval was refused or
    timed out. The message names the metric and the limit that decided it."""


class CanaryFailed(ScalewiseError):
    """A canary's replicas did not become ready (or a canary step said no); the stable is untouched
    and the canary is left for the abort that follows."""

    def __init__(self, workload: str, reason: str) -> None:
        self.workload = workload
        self.reason = reason
        super().__init__(f"canary of {workload!r} failed: {reason}")
