"""Webhook receiver configuration: routes (Alertmanager alert -> action) and callers (who may call).

Loaded from YAML (path in ``SCALEWISE_WEBHOOK_CONFIG``). Secrets are never in the file: a caller
names an environment variable or a Prefect Secret block, resolved once at start-up and held as
:class:`pydantic.SecretStr` (never logged, never echoed).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from scalewise.errors import SpecError
from scalewise.spec import check_image, read_yaml, spec_error_from_validation

CONFIG_ENV = "SCALEWISE_WEBHOOK_CONFIG"

ActionName = Literal["scale-out", "scale-in", "scale", "rolling-update", "rollback"]
ACTIONS: tuple[str, ...] = ("scale-out", "scale-in", "scale", "rolling-update", "rollback")
Endpoint = Literal["alertmanager", "actions", "approvals"]
#: A caller's endpoints when it lists none. ``approvals`` (answering a run paused for a person) is never
#: a default: a caller gets it only by naming it.
ENDPOINTS: tuple[Endpoint, ...] = ("alertmanager", "actions")

#: Which action parameters each action takes (and which of them it requires).
ACTION_PARAMS: dict[str, tuple[set[str], set[str]]] = {
    "scale-out": ({"by"}, set()),
    "scale-in": ({"by"}, set()),
    "scale": ({"replicas"}, {"replicas"}),
    "rolling-update": ({"image"}, {"image"}),
    "rollback": ({"to_revision"}, set()),
}
#: Scaling actions carry the observation time and the maximum observation age to the flow.
SCALING_ACTIONS = frozenset({"scale-out", "scale-in", "scale"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionParams(_Strict):
    """An action with its parameters; which parameters apply depends on the action."""

    action: ActionName
    by: int | None = Field(default=None, description="scale-out / scale-in step (default 1)")
    replicas: int | None = Field(default=None, description="scale: absolute replica count")
    image: str | None = Field(default=None, description="rolling-update: the new image")
    to_revision: int | None = Field(default=None, description="rollback: revision (default previous)")
    dry_run: bool = False

    @model_validator(mode="after")
    def _params_fit(self) -> ActionParams:
        problem = param_problem(self.action, self.model_dump(exclude={"action", "dry_run"}))
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return self


def param_problem(action: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """``(field, reason)`` of the first parameter that does not fit ``action``, else ``None``.

    Checks that do not need the workload (replica bounds are checked against the spec elsewhere).
    """
    allowed, required = ACTION_PARAMS[action]
    for name, value in params.items():
        if value is not None and name not in allowed:
            return name, f"not a parameter of {action} (it takes: {', '.join(sorted(allowed)) or 'none'})"
    for name in sorted(required):
        if params.get(name) is None:
            return name, f"{action} requires {name}"
    by = params.get("by")
    if by is not None and not 1 <= by <= 10_000:
        return "by", "must be between 1 and 10000"
    replicas = params.get("replicas")
    if replicas is not None and not 0 <= replicas <= 10_000:
        return "replicas", "must be between 0 and 10000"
    revision = params.get("to_revision")
    if revision is not None and not 1 <= revision <= 2**31:
        return "to_revision", "must be a positive revision number"
    image = params.get("image")
    if image is not None:
        try:
            check_image(image)
        except ValueError as exc:
            return "image", str(exc)
    return None


class Route(_Strict):
    """Which alerts act, on which workload, and how."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    match: dict[str, str] = Field(default_factory=dict, description="Labels that must equal these values")
    match_re: dict[str, str] = Field(
        default_factory=dict, description="Labels that must fully match these regular expressions"
    )
    workload: str | None = Field(default=None, description="A fixed workload name")
    workload_label: str | None = Field(default=None, description="Label that names the workload")
    on_firing: ActionParams | None = None
    on_resolved: ActionParams | None = None

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"label {label!r}: not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> Route:
        if (self.workload is None) == (self.workload_label is None):
            raise ValueError("give exactly one of 'workload' (a fixed name) or 'workload_label'")
        if self.on_firing is None and self.on_resolved is None:
            raise ValueError("give 'on_firing' and/or 'on_resolved'")
        if not self.match and not self.match_re:
            raise ValueError("give 'match' and/or 'match_re' (a route matching every alert is a mistake)")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in self.match.items():
            if labels.get(key) != value:
                return False
        return all(re.fullmatch(p, labels.get(k, "")) for k, p in self.match_re.items())

    def workload_for(self, labels: dict[str, str]) -> str | None:
        if self.workload is not None:
            return self.workload
        assert self.workload_label is not None
        return labels.get(self.workload_label)


class RateLimit(_Strict):
    per_second: float = Field(default=10.0, gt=0, le=1_000_000, description="Sustained requests per second")
    burst: int = Field(default=20, ge=1, le=1_000_000, description="Requests allowed at once")


class Caller(_Strict):
    """Someone allowed to call the receiver. Every credential configured must verify."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@\-]+$")
    token_env: str | None = Field(default=None, description="Env var holding the bearer token")
    token_secret_block: str | None = Field(default=None, description="Prefect Secret block with the token")
    hmac_secret_env: str | None = Field(default=None, description="Env var holding the HMAC secret")
    hmac_secret_block: str | None = Field(
        default=None, description="Prefect Secret block with the HMAC secret"
    )
    endpoints: list[Endpoint] = Field(default_factory=lambda: list(ENDPOINTS))
    allow_actions: list[ActionName] | None = Field(default=None, description="None: every action")
    allow_workloads: list[str] | None = Field(default=None, description="Glob patterns; None: every workload")
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @model_validator(mode="after")
    def _has_credential(self) -> Caller:
        if self.token_env and self.token_secret_block:
            raise ValueError("give token_env or token_secret_block, not both")
        if self.hmac_secret_env and self.hmac_secret_block:
            raise ValueError("give hmac_secret_env or hmac_secret_block, not both")
        if not (self.token_env or self.token_secret_block or self.hmac_secret_env or self.hmac_secret_block):
            raise ValueError("a caller needs a bearer token and/or an HMAC secret")
        return self

    def may_touch(self, workload: str) -> tuple[str, str] | None:
        """``(field, reason)`` if this caller may not act on ``workload`` at all."""
        if self.allow_workloads is not None and not any(
            fnmatch.fnmatchcase(workload, pattern) for pattern in self.allow_workloads
        ):
            return "workload", f"caller {self.name!r} may not act on workload {workload!r}"
        return None

    def may(self, action: str, workload: str) -> tuple[str, str] | None:
        """``(field, reason)`` if this caller may not run ``action`` on ``workload``."""
        if self.allow_actions is not None and action not in self.allow_actions:
            return "action", f"caller {self.name!r} may not run {action}"
        return self.may_touch(workload)


class WebhookConfig(_Strict):
    deployment_suffix: str = Field(default="scalewise", description="Deployments are '<flow>/<suffix>'")
    replay_window_s: float = Field(default=300.0, gt=0, le=86_400)
    max_body_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    max_observation_age_s: float = Field(default=300.0, gt=0)
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0)
    max_alerts: int = Field(default=200, ge=1, le=10_000, description="Alerts per notification")
    callers: list[Caller] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    run_inline: list[ActionName] = Field(
        default_factory=list,
        description="Scaling actions the receiver runs itself, in its own process, as soon as their run "
        "exists (the same deployment run, claimed so no runner takes it); needs access to the targets",
    )
    inline_runs: int = Field(default=4, ge=1, le=64, description="Inline runs at once (one per workload)")

    @field_validator("run_inline")
    @classmethod
    def _short_actions_only(cls, value: list[str]) -> list[str]:
        for action in value:
            if action not in SCALING_ACTIONS:
                raise ValueError(
                    f"{action} cannot run inline: only the short scaling actions can "
                    f"({', '.join(sorted(SCALING_ACTIONS))}); the others run on the runners"
                )
        return value

    @model_validator(mode="after")
    def _unique(self) -> WebhookConfig:
        for kind, names in (
            ("caller", [c.name for c in self.callers]),
            ("route", [r.name for r in self.routes]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        return self

    def deployment(self, action: str) -> str:
        return f"{action}/{self.deployment_suffix}"


class Credentials(BaseModel):
    """A caller's resolved secrets."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr | None = None
    hmac_secret: SecretStr | None = None


def _secret(env: str | None, block: str | None, caller: str, what: str) -> SecretStr | None:
    if env:
        value = os.environ.get(env)
        if not value:
            raise SpecError(
                "webhook config", f"callers.{caller}.{what}_env", f"environment variable {env} is not set"
            )
        return SecretStr(value)
    if block:
        from prefect.blocks.system import Secret

        try:
            loaded: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:
            raise SpecError(
                "webhook config", f"callers.{caller}.{what}_secret_block", f"cannot load Secret block: {exc}"
            ) from None
        value = loaded.get()
        if not isinstance(value, str) or not value:
            raise SpecError(
                "webhook config", f"callers.{caller}.{what}_secret_block", "must hold a non-empty string"
            )
        return SecretStr(value)
    return None


def resolve_credentials(config: WebhookConfig) -> dict[str, Credentials]:
    """Read every caller's secrets from the environment or Prefect Secret blocks (fails on a missing one)."""
    return {
        c.name: Credentials(
            token=_secret(c.token_env, c.token_secret_block, c.name, "token"),
            hmac_secret=_secret(c.hmac_secret_env, c.hmac_secret_block, c.name, "hmac"),
        )
        for c in config.callers
    }


def parse_config(data: Any, source: str = "<webhook config>") -> WebhookConfig:
    if not isinstance(data, dict):
        raise SpecError(source, "", "the webhook config must be a mapping")
    try:
        return WebhookConfig.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(source, exc) from None


def load_config(path: str | Path | None = None) -> WebhookConfig:
    """Load the config from ``path`` or ``$SCALEWISE_WEBHOOK_CONFIG``."""
    where = path or os.environ.get(CONFIG_ENV)
    if not where:
        raise SpecError("webhook config", "", f"no config file: pass --config or set {CONFIG_ENV}")
    file = Path(where)
    docs = read_yaml(file)  # strict: duplicate keys, bad bytes, alias bombs are SpecErrors naming the file
    if len(docs) > 1:
        raise SpecError(str(file), "", f"expected one YAML document, found {len(docs)}")
    return parse_config(docs[0] if docs else None, str(file))
