"""The webhook receiver: an ASGI (Starlette) app that turns Alertmanager notifications and generic
action requests into Prefect deployment runs.

Order of checks, each refusing with ``{"error": ..., "field": ...}`` and starting nothing:
413 body too large (Content-Length, then the bytes read) -> 401 authentication (bearer / HMAC,
replay window) -> 403 endpoint not allowed for the caller -> 429 rate limit (token bucket per caller,
``Retry-After``) -> 400 malformed JSON / schema -> 403 action or workload not allowed -> 404 unknown
workload -> 422 bad action parameters (replicas outside min/max, ...) -> 409 idempotency key reused
with a different body. Duplicates (same alert fingerprint + startsAt + route + status, or the same
``Idempotency-Key`` from the same caller) answer **200 with the original flow run id** and
``"duplicate": true`` and the run's state; a new run answers 202 only after the flow run exists in Prefect.

An absolute request (``scale`` to N, ``rolling-update`` to an image, ``rollback`` to a revision; see
``coalesce.py``) then supersedes the older accepted requests of the same action for the same workload
whose runs have not started: they end Cancelled with "superseded by request <key>/run <id>" (the 202
lists them under ``supersedes``; a retry of a superseded request answers ``superseded_by``).
Coalescing is best effort: if it fails, the older runs act as they would have, in turn.

The actions listed in the config's ``run_inline`` (scaling only) are then executed by the receiver
itself, in its own worker processes, instead of waiting for a runner (``inline.py``; the 202 says
``"executes": "inline"``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect.context import SettingsContext
from prefect.exceptions import ObjectNotFound
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scalewise.errors import ScalewiseError
from scalewise.settings import workloads_path
from scalewise.spec import WorkloadSpec, load_workloads
from scalewise.webhook.auth import Authenticated, Authenticator, AuthError
from scalewise.webhook.coalesce import (
    ABSOLUTE_ACTIONS,
    QueuedRun,
    is_absolute,
    parse_superseded,
    plan_supersede,
    request_ref,
    request_tag,
    superseded_message,
)
from scalewise.webhook.config import (
    SCALING_ACTIONS,
    ActionName,
    ActionParams,
    Caller,
    Credentials,
    WebhookConfig,
    param_problem,
    resolve_credentials,
)
from scalewise.webhook.inline import InlineRuns, WorkerProcesses
from scalewise.webhook.starter import PrefectStarter, RunStarter, StartedRun

log = logging.getLogger("scalewise.webhook")

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY = 200
WEBHOOK_TAG = "webhook"
LOCK_STRIPES = 256
MAX_REMEMBERED = 200_000


class Problem(Exception):
    """A refused request: HTTP status, message, offending field, metrics reason."""

    def __init__(
        self, status: int, error: str, field: str | None, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "field": self.field}, self.status, headers=self.headers)


# --- request models ---------------------------------------------------------------------------------


class ActionRequest(BaseModel):
    """``POST /v1/actions``: one action on one workload."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workload: str = Field(min_length=1, max_length=253)
    action: ActionName
    replicas: int | None = None
    by: int | None = None
    image: str | None = Field(default=None, max_length=1000)
    to_revision: int | None = None
    reason: str | None = Field(default=None, max_length=500)
    dry_run: bool = False


class ApprovalRequest(BaseModel):
    """``POST /v1/approvals``: answer the run of ``workload`` paused for a person (by ``run``, or its one
    paused run); the caller is recorded as the approver (``webhook:<caller>``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workload: str = Field(min_length=1, max_length=253)
    run: str | None = Field(default=None, min_length=1, max_length=100, description="Flow run id (UUID)")
    approve: bool = True
    comment: str = Field(default="", max_length=2000)


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=200)


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body (version "4"); unknown top-level fields are ignored."""

    model_config = ConfigDict(extra="allow")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert]


# --- building blocks ----------------------------------------------------------------------------------


class TokenBucket:
    """``per_second`` sustained, ``burst`` at once. Single event loop: no lock needed (no awaits)."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_second
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class Accepted:
    flow_run_id: str
    deployment: str
    workload: str
    body_hash: str
    expires: float


class IdempotencyStore:
    """Keys of runs already started (TTL). Striped locks serialise concurrent duplicates of one key,
    so a burst of the same alert starts one run; Prefect's own idempotency key covers restarts."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, Accepted] = {}
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(key.encode()) % LOCK_STRIPES]

    def get(self, key: str) -> Accepted | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires < self.clock():
            del self._entries[key]
            return None
        return entry

    def put(self, key: str, run: StartedRun, deployment: str, workload: str, body_hash: str) -> None:
        now = self.clock()
        if len(self._entries) > 10_000:
            for k in [k for k, e in self._entries.items() if e.expires < now]:
                del self._entries[k]
            # a hard cap: forget the oldest first (Prefect's idempotency key still dedupes them)
            while len(self._entries) > MAX_REMEMBERED:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = Accepted(run.flow_run_id, deployment, workload, body_hash, now + self.ttl_s)


class WorkloadCatalog:
    """Declared workloads, re-read when a spec file changes (GitOps: edit, commit, sync)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._sig: tuple[Any, ...] | None = None
        self._specs: dict[str, WorkloadSpec] = {}

    def _signature(self, root: Path) -> tuple[Any, ...]:
        try:
            files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")]) if root.is_dir() else [root]
            out: list[Any] = [str(root)]
            for f in files:
                st = f.stat()
                out.append((f.name, st.st_mtime_ns, st.st_size))
            return tuple(out)
        except OSError:
            return (str(root), None)

    def get(self, name: str) -> WorkloadSpec | None:
        root = self.path or workloads_path()
        sig = self._signature(root)
        if sig != self._sig:
            try:
                self._specs = load_workloads(root)
            except ScalewiseError as exc:
                raise Problem(503, f"workload specs do not load: {exc}", None, "specs_invalid") from None
            self._sig = sig
        return self._specs.get(name)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "scalewise_webhook_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.runs = Counter("scalewise_webhook_runs_started", "Flow runs started", ["deployment"], registry=r)
        self.rejected = Counter(
            "scalewise_webhook_rejected", "Requests refused, by reason", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "scalewise_webhook_duplicates", "Duplicate requests (no new run)", registry=r
        )
        self.superseded = Counter(
            "scalewise_webhook_superseded",
            "Queued runs cancelled before they started, superseded by a newer absolute request",
            ["deployment"],
            registry=r,
        )
        self.rate_limited = Counter(
            "scalewise_webhook_rate_limited", "Requests refused by the rate limit", ["caller"], registry=r
        )
        self.latency = Histogram(
            "scalewise_webhook_request_seconds",
            "Request handling time",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


@dataclass
class Planned:
    """One run to start (validated), with its idempotency key."""

    deployment: str
    workload: str
    parameters: dict[str, Any]
    key: str | None
    body_hash: str
    info: dict[str, Any] = field(default_factory=dict)
    action: str = ""
    #: How a superseded run names this request: the caller's Idempotency-Key, or the alert.
    ref: str | None = None

    @property
    def tags(self) -> list[str]:
        return ["scalewise", WEBHOOK_TAG] + ([request_tag(self.ref)] if self.ref else [])


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key {key!r}")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a repeated key (``json`` would keep the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


_Body = TypeVar("_Body", bound=BaseModel)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        raise Problem(400, f"malformed JSON: duplicate key {exc.key[:100]!r}", exc.key[:100], "malformed") from None
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"malformed JSON: {str(exc)[:200]}", None, "malformed") from None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _schema_problem(exc: ValidationError, prefix: str = "") -> Problem:
    first = exc.errors(include_url=False)[0]
    where = _loc(tuple(first["loc"]))
    return Problem(400, f"invalid request: {first['msg']}", f"{prefix}{where}" if prefix else where, "schema")


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _iso(t: datetime) -> str:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


# --- the receiver -----------------------------------------------------------------------------------


class Receiver:
    def __init__(
        self,
        config: WebhookConfig,
        credentials: dict[str, Credentials],
        starter: RunStarter,
        workloads: Path | None = None,
    ) -> None:
        self.config = config
        self.auth = Authenticator(config.callers, credentials, config.replay_window_s)
        self.starter = starter
        self.catalog = WorkloadCatalog(workloads)
        self.idempotency = IdempotencyStore(config.idempotency_ttl_s)
        self.buckets = {
            c.name: TokenBucket(c.rate_limit.per_second, c.rate_limit.burst) for c in config.callers
        }
        self.metrics = Metrics()
        # The Prefect settings current where the app is built (uvicorn may serve it from another thread,
        # where Prefect would see only its import-time settings); the approval calls run in them.
        self.prefect_settings = SettingsContext.get()
        #: Runs of the actions in ``run_inline`` execute in the receiver's worker processes (inline.py);
        #: the others on the runners.
        self.workers: WorkerProcesses | None = None
        self.inline: InlineRuns | None = None
        if config.run_inline:
            settings = self.prefect_settings.settings if self.prefect_settings is not None else None
            environment = settings.to_environment_variables(exclude_unset=True) if settings is not None else {}
            self.workers = WorkerProcesses(config.inline_runs, environment)
            self.inline = InlineRuns(self.workers, config.inline_runs)

    # -- shared steps --

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Problem(400, "Content-Length is not a number", "Content-Length", "malformed") from None
            if size > limit:
                raise Problem(413, f"body larger than {limit} bytes", "Content-Length", "too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Problem(413, f"body larger than {limit} bytes", None, "too_large")
        return bytes(body)

    def _authenticate(self, request: Request, body: bytes, endpoint: str) -> Authenticated:
        try:
            who = self.auth.authenticate({k.lower(): v for k, v in request.headers.items()}, body)
        except AuthError as exc:
            raise Problem(
                401, exc.message, exc.field, "auth", {"WWW-Authenticate": 'Bearer realm="scalewise"'}
            ) from None
        if endpoint not in who.caller.endpoints:
            raise Problem(403, f"caller {who.caller.name!r} may not use this endpoint", None, "forbidden")
        wait = self.buckets[who.caller.name].take()
        if wait > 0:
            self.metrics.rate_limited.labels(who.caller.name).inc()
            raise Problem(
                429,
                "rate limit exceeded; retry later",
                None,
                "rate_limited",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if who.signature is not None and who.timestamp is not None:
            self.auth.replay.mark(who.signature, who.timestamp)
        return who

    def _check(
        self, caller: Caller, action: str, workload: str, params: dict[str, Any], where: str
    ) -> WorkloadSpec:
        """403 / 404 / 422 for one action on one workload (nothing is started)."""
        refused = caller.may(action, workload)
        if refused:
            raise Problem(403, refused[1], f"{where}{refused[0]}" if where else refused[0], "forbidden")
        spec = self.catalog.get(workload)
        if spec is None:
            raise Problem(
                404,
                f"unknown workload {workload!r}",
                f"{where}workload" if where else "workload",
                "unknown_workload",
            )
        problem = param_problem(action, params)
        if problem is None and action == "scale":
            lo, hi = spec.replicas.min, spec.replicas.max
            if not lo <= params["replicas"] <= hi:
                problem = (
                    "replicas",
                    f"{params['replicas']} is outside [min={lo}, max={hi}] of {workload!r}",
                )
        if problem:
            raise Problem(422, problem[1], f"{where}{problem[0]}", "bad_params")
        return spec

    def _parameters(
        self,
        action: str,
        workload: str,
        params: dict[str, Any],
        *,
        reason: str,
        dry_run: bool,
        actor: str,
        detail: str,
        observed_at: datetime,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": workload,
            "reason": reason[:500],
            "dry_run": dry_run,
            "trigger": {"kind": "webhook", "actor": actor[:200], "detail": detail[:500]},
        }
        out.update({k: v for k, v in params.items() if v is not None})
        if action in SCALING_ACTIONS:
            out["observed_at"] = _iso(observed_at)
            out["max_observation_age_s"] = self.config.max_observation_age_s
        return out

    async def _start(self, plan: Planned, received: float) -> tuple[dict[str, Any], bool]:
        """Start one run (or find the one already started for its key): (result, started_new)."""
        if plan.key is None:
            run = await self.starter.start(plan.deployment, plan.parameters, None, plan.tags)
            return self._execute({**self._accepted(plan, run.flow_run_id, False), **await self._coalesce(plan, run)},
                                 plan), True
        async with self.idempotency.lock(plan.key):
            seen = self.idempotency.get(plan.key)
            if seen is not None:
                if seen.body_hash != plan.body_hash:
                    raise Problem(
                        409,
                        "Idempotency-Key already used for a different request",
                        "Idempotency-Key",
                        "idempotency_conflict",
                    )
                run = StartedRun(seen.flow_run_id, None)
            else:
                run = await self.starter.start(plan.deployment, plan.parameters, plan.key, plan.tags)
                self.idempotency.put(plan.key, run, plan.deployment, plan.workload, plan.body_hash)
        # Remembered here, or Prefect returned a run created before this request (from before a restart).
        duplicate = seen is not None or (run.created is not None and run.created.timestamp() < received - 2.0)
        if duplicate:
            self.metrics.duplicates.inc()
            return {**self._accepted(plan, run.flow_run_id, True), **await self._lookup(run.flow_run_id)}, False
        return self._execute({**self._accepted(plan, run.flow_run_id, False), **await self._coalesce(plan, run)},
                             plan), True

    def _execute(self, accepted: dict[str, Any], plan: Planned) -> dict[str, Any]:
        """Hand a new run of an inline action to :class:`InlineRuns` (unless coalescing cancelled it
        already); the answer says where it executes."""
        if self.inline is None or plan.action not in self.config.run_inline:
            return accepted
        if accepted.get("state") == "Cancelled":
            return accepted
        self.inline.submit(plan.workload, accepted["flow_run_id"])
        return {**accepted, "executes": "inline"}

    async def _lookup(self, run_id: str) -> dict[str, Any]:
        """A duplicate's run as it is now: its state, and the run that superseded it, if one did.
        Best effort (the duplicate answer stands without it)."""
        try:
            name, message = await self.starter.state(run_id)
        except Exception as exc:
            log.warning("could not read the state of run %s: %s: %s", run_id, type(exc).__name__, str(exc)[:200])
            return {}
        out: dict[str, Any] = {"state": name}
        pointer = parse_superseded(message) if name == "Cancelled" else None
        if pointer is not None:
            out["superseded_by"] = {"request": pointer[0], "flow_run_id": pointer[1]}
        return out

    async def finish_claims(self) -> list[str]:
        """At start-up: cancel the runs a receiver claimed for cancelling but stopped before it could
        (Pending with a supersede message: no runner starts them). Best effort; returns their ids."""
        done: list[str] = []
        for action in ABSOLUTE_ACTIONS:
            deployment = self.config.deployment(action)
            try:
                for run in await self.starter.queued(deployment, WEBHOOK_TAG):
                    if run.claimed and run.message and await self.starter.cancel_unstarted(run, run.message):
                        done.append(run.flow_run_id)
            except Exception as exc:
                log.warning("could not finish claims on %s: %s: %s", deployment, type(exc).__name__, str(exc)[:200])
        if done:
            log.info("cancelled %d runs claimed by a receiver that stopped before cancelling them", len(done))
        return done

    async def _coalesce(self, plan: Planned, run: StartedRun) -> dict[str, Any]:
        """After starting an absolute request's run: cancel the older unstarted runs of the same action
        for the workload (see ``coalesce.py``), each with a message naming the newest request and run.

        Done here, by the receiver, before the runner can spend a process and a lock turn on runs whose
        writes would be overwritten at once; not by a flow run finding a newer request under the
        lock, which would still cost one process per superseded request and a Prefect query in every
        run's critical section. The claim (Scheduled -> Pending) makes it race-free: a run a runner
        has claimed, started or finished is never touched. Best effort: on any error the older runs
        simply act, in turn, as without coalescing."""
        if not is_absolute(plan.action, plan.parameters):
            return {}
        own = QueuedRun(run.flow_run_id, run.created, plan.parameters, plan.tags, unstarted=False)
        cancelled: list[str] = []
        try:
            queued = await self.starter.queued(plan.deployment, WEBHOOK_TAG)
            newest, older = plan_supersede(plan.action, plan.workload, own, queued)
            ref = plan.ref if newest.flow_run_id == run.flow_run_id else request_ref(newest.tags)
            message = superseded_message(ref, newest.flow_run_id, plan.action, plan.workload, newest.parameters)
            for old in older:
                if await self.starter.cancel_unstarted(old, message):
                    cancelled.append(old.flow_run_id)
                    self.metrics.superseded.labels(plan.deployment).inc()
                    log.info("cancelled %s run %s for %s: %s", plan.deployment, old.flow_run_id, plan.workload, message)
        except Exception as exc:
            log.warning(
                "could not coalesce %s requests for %s (older runs act in turn): %s: %s",
                plan.deployment, plan.workload, type(exc).__name__, str(exc)[:300],
            )
            return {"supersedes": cancelled} if cancelled else {}
        out: dict[str, Any] = {}
        if run.flow_run_id in cancelled:  # a newer request's run was stored while this one was
            out["state"] = "Cancelled"
            out["superseded_by"] = {"request": ref or "(no Idempotency-Key)", "flow_run_id": newest.flow_run_id}
        others = [c for c in cancelled if c != run.flow_run_id]
        if others:
            out["supersedes"] = others
        return out

    def _accepted(self, plan: Planned, run_id: str, duplicate: bool) -> dict[str, Any]:
        out = {"flow_run_id": run_id, "deployment": plan.deployment, "workload": plan.workload, **plan.info}
        if duplicate:
            out["duplicate"] = True
        else:
            self.metrics.runs.labels(plan.deployment).inc()
            log.info(
                "started %s for %s: flow run %s (%s)",
                plan.deployment,
                plan.workload,
                run_id,
                plan.parameters["trigger"]["detail"],
            )
        return out

    async def _starting(self, who: Authenticated, start: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await start()
        except Problem:
            raise
        except Exception as exc:  # Prefect unreachable or refusing: nothing accepted, safe to retry
            if who.signature is not None:
                self.auth.replay.forget(who.signature)
            what = type(exc).__name__
            if isinstance(exc, ObjectNotFound):
                what = "deployment not found (are the scalewise deployments served?)"
            log.warning("could not start a run: %s: %s", what, str(exc)[:300])
            raise Problem(
                503,
                f"could not start the run: {what}",
                None,
                "unavailable",
                {"Retry-After": "5"},
            ) from None

    # -- endpoints --

    async def _open(
        self, request: Request, endpoint: str, model: type[_Body]
    ) -> tuple[Authenticated, dict[str, Any], _Body]:
        """Every endpoint's opening: read the bounded body, authenticate it, parse it as a JSON object
        and validate it as ``model`` (each failure a :class:`Problem` naming the field and reason)."""
        body = await self._read_body(request)
        who = self._authenticate(request, body, endpoint)
        data = _json(body)
        if not isinstance(data, dict):
            raise Problem(400, "the body must be a JSON object", None, "schema")
        try:
            return who, data, model.model_validate(data)
        except ValidationError as exc:
            raise _schema_problem(exc) from None

    async def actions(self, request: Request) -> Response:
        received = time.time()
        who, data, req = await self._open(request, "actions", ActionRequest)
        params = {"by": req.by, "replicas": req.replicas, "image": req.image, "to_revision": req.to_revision}
        self._check(who.caller, req.action, req.workload, params, "")
        key_header = request.headers.get(IDEMPOTENCY_HEADER)
        key: str | None = None
        if key_header is not None:
            if not 1 <= len(key_header) <= MAX_IDEMPOTENCY_KEY or not key_header.isprintable():
                raise Problem(
                    400,
                    f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
                    "Idempotency-Key",
                    "schema",
                )
            key = "actions:" + hashlib.sha256(f"{who.caller.name}\0{key_header}".encode()).hexdigest()
        detail = f"{req.action} via /v1/actions" + (f" (Idempotency-Key {key_header})" if key_header else "")
        plan = Planned(
            deployment=self.config.deployment(req.action),
            workload=req.workload,
            parameters=self._parameters(
                req.action,
                req.workload,
                params,
                reason=req.reason or f"{req.action} (webhook {who.caller.name})",
                dry_run=req.dry_run,
                actor=who.caller.name,
                detail=detail,
                observed_at=datetime.now(UTC),
            ),
            key=key,
            body_hash=_hash(data),
            action=req.action,
            ref=key_header,
        )

        async def go() -> Response:
            result, new = await self._start(plan, received)
            return JSONResponse(result, 202 if new else 200)

        return await self._starting(who, go)

    async def alertmanager(self, request: Request) -> Response:
        received = time.time()
        who, _, payload = await self._open(request, "alertmanager", AlertmanagerPayload)
        if len(payload.alerts) > self.config.max_alerts:
            raise Problem(
                413, f"more than {self.config.max_alerts} alerts in one notification", "alerts", "too_large"
            )
        plans: list[Planned] = []
        unmatched = 0
        for i, alert in enumerate(payload.alerts):
            route = next((r for r in self.config.routes if r.matches(alert.labels)), None)
            act: ActionParams | None = None
            if route is not None:
                act = route.on_firing if alert.status == "firing" else route.on_resolved
            if route is None or act is None:
                unmatched += 1
                continue
            where = f"alerts[{i}]."
            workload = route.workload_for(alert.labels)
            if not workload:
                raise Problem(
                    422,
                    f"route {route.name!r}: the alert has no label {route.workload_label!r}",
                    f"{where}labels.{route.workload_label}",
                    "bad_params",
                )
            params = act.model_dump(exclude={"action", "dry_run"})
            self._check(who.caller, act.action, workload, params, where)
            alertname = alert.labels.get("alertname", "?")
            fingerprint = alert.fingerprint or _hash(alert.labels)[:16]
            observed = alert.startsAt if alert.status == "firing" else (alert.endsAt or datetime.now(UTC))
            if observed.year < 2000:  # Alertmanager's zero time
                observed = datetime.now(UTC)
            detail = f"alert {alertname} {alert.status} (route {route.name}, fingerprint {fingerprint})"
            reason = (
                alert.annotations.get("summary") or f"alert {alertname} {alert.status} (route {route.name})"
            )
            key_src = f"{route.name}\0{fingerprint}\0{_iso(alert.startsAt)}\0{alert.status}"
            plans.append(
                Planned(
                    deployment=self.config.deployment(act.action),
                    workload=workload,
                    parameters=self._parameters(
                        act.action,
                        workload,
                        params,
                        reason=reason,
                        dry_run=act.dry_run,
                        actor=who.caller.name,
                        detail=detail,
                        observed_at=observed,
                    ),
                    key="alert:" + hashlib.sha256(key_src.encode()).hexdigest(),
                    body_hash="alert",
                    info={"alert": alertname, "route": route.name, "status": alert.status},
                    action=act.action,
                    ref=f"alert:{route.name}:{fingerprint}:{alert.status}",
                )
            )

        async def go() -> Response:
            runs: list[dict[str, Any]] = []
            any_new = False
            for plan in plans:
                result, new = await self._start(plan, received)
                runs.append(result)
                any_new |= new
            return JSONResponse({"runs": runs, "unmatched": unmatched}, 202 if any_new else 200)

        return await self._starting(who, go)

    async def approvals(self, request: Request) -> Response:
        """Answer a paused run (approve or reject, with a comment) as the authenticated caller."""
        who, _, req = await self._open(request, "approvals", ApprovalRequest)
        refused = who.caller.may_touch(req.workload)
        if refused:
            raise Problem(403, refused[1], refused[0], "forbidden")
        if self.catalog.get(req.workload) is None:
            raise Problem(404, f"unknown workload {req.workload!r}", "workload", "unknown_workload")
        from scalewise.approval import ApprovalError, parse_run_id, paused_run_of, resume

        if req.run is not None:
            try:
                parse_run_id(req.run)
            except ApprovalError:
                raise Problem(400, f"{req.run!r} is not a flow run id (a UUID)", "run", "schema") from None
        approver = f"webhook:{who.caller.name}"

        def answer() -> dict[str, Any]:
            with self.prefect_settings.model_copy() if self.prefect_settings is not None else nullcontext():
                run_id = req.run if req.run is not None else paused_run_of(req.workload)
                name = resume(run_id, approve=req.approve, comment=req.comment, approver=approver,
                              workload=req.workload)
            return {"flow_run_id": run_id, "flow_run": name, "workload": req.workload,
                    "decision": "approved" if req.approve else "rejected", "approver": approver}

        try:
            result = await asyncio.to_thread(answer)
        except ApprovalError as exc:
            status = {"not_found": 404, "bad_input": 422}.get(exc.kind, 409)
            message = str(exc).split(": ", 1)[-1] if str(exc).startswith(("RUN: ", "--workload: ")) else str(exc)
            raise Problem(status, message, "run" if req.run is not None else "workload", "approval") from None
        log.info("%s %s (%s) of %s as %s", result["decision"], result["flow_run"], result["flow_run_id"],
                 req.workload, approver)
        return JSONResponse(result, 200)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def wrap(
        self, name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except Problem as problem:
                self.metrics.rejected.labels(problem.reason).inc()
                log.info("%s refused: %s %s (%s)", name, problem.status, problem.reason, problem.field or "-")
                response = problem.response()
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
            return response

        return endpoint


def create_app(
    config: WebhookConfig,
    credentials: dict[str, Credentials] | None = None,
    starter: RunStarter | None = None,
    workloads: Path | None = None,
) -> Starlette:
    """The receiver app. ``credentials`` default to the environment / Prefect Secret blocks;
    ``workloads`` to ``$SCALEWISE_WORKLOADS`` (read per request, cached until a file changes)."""
    receiver = Receiver(
        config,
        credentials if credentials is not None else resolve_credentials(config),
        starter or PrefectStarter(),
        workloads,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await receiver.starter.open()
        if receiver.workers is not None:
            receiver.workers.start()
        # in the background: serving does not wait for it (nor for an unreachable Prefect's retries)
        sweep = asyncio.create_task(receiver.finish_claims())
        try:
            yield
        finally:
            sweep.cancel()
            with suppress(asyncio.CancelledError):
                await sweep
            if receiver.inline is not None and receiver.workers is not None:  # queued runs stay Scheduled
                still = await receiver.inline.close()
                receiver.workers.close(wait=still == 0)
            await receiver.starter.close()

    app = Starlette(
        routes=[
            Route("/v1/alertmanager", receiver.wrap("alertmanager", receiver.alertmanager), methods=["POST"]),
            Route("/v1/actions", receiver.wrap("actions", receiver.actions), methods=["POST"]),
            Route("/v1/approvals", receiver.wrap("approvals", receiver.approvals), methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
            Route("/metrics", receiver.metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    return app


def app_from_env() -> Starlette:
    """uvicorn factory: ``uvicorn --factory scalewise.webhook.app:app_from_env``."""
    from scalewise.webhook.config import load_config

    return create_app(load_config())


__all__ = ["Problem", "Receiver", "app_from_env", "create_app"]
