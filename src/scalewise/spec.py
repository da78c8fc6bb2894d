"""Typed, validated workload specs, loaded from YAML files or folders (GitOps-friendly).

Every error names the file, the field and the reason, and loading has no side effects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from scalewise.durations import Duration
from scalewise.errors import SpecError
from scalewise.policy.canary import CanaryStep, check_steps
from scalewise.policy.config import AutoscalingSpec

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]*$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
LABEL_KEY_RE = re.compile(r"^([A-Za-z0-9.\-]+/)?[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?$")

Target = Literal["swarm", "docker", "kubernetes"]
TARGETS: tuple[str, ...] = ("swarm", "docker", "kubernetes")


def check_name(value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > 53:
        raise ValueError(
            "must be 1-53 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )
    return value


def check_image(value: str) -> str:
    if not isinstance(value, str) or not IMAGE_RE.match(value) or len(value) > 255:
        raise ValueError("must be an image reference like 'repo/name:tag' (no spaces)")
    return value


WorkloadName = Annotated[str, Field(description="DNS-1123 label, at most 53 characters")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Port(_Strict):
    container: int = Field(ge=1, le=65535, description="Port the process listens on")
    published: int | None = Field(default=None, ge=1, le=65535, description="Port exposed on the host")
    protocol: Literal["tcp", "udp"] = "tcp"


class HealthCheck(_Strict):
    """A container health check; ``command`` runs inside the container (shell form)."""

    command: str = Field(min_length=1, description="Shell command; exit 0 means healthy")
    interval: Duration = Field(default=2.0, gt=0)
    timeout: Duration = Field(default=2.0, gt=0)
    retries: int = Field(default=3, ge=1, le=100)
    start_period: Duration = 0.0


class Replicas(_Strict):
    min: int = Field(default=1, ge=0, le=10_000)
    max: int = Field(default=10, ge=0, le=10_000)
    initial: int | None = Field(default=None, ge=0, le=10_000, description="Replicas on first deploy")

    @model_validator(mode="after")
    def _bounds(self) -> Replicas:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        if self.max == 0:
            raise ValueError("max must be at least 1")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) is outside [min={self.min}, max={self.max}]")
        return self

    @property
    def start(self) -> int:
        return self.initial if self.initial is not None else max(self.min, 1)

    def clamp(self, value: int) -> int:
        return max(self.min, min(self.max, value))


class UpdateStrategy(_Strict):
    """How a new image is rolled out. Swarm reads parallelism/order/delay/failure_action/monitor,
    Kubernetes reads max_surge/max_unavailable, the plain engine reads parallelism and order."""

    parallelism: int = Field(default=1, ge=0, le=1000, description="Tasks updated at once (0 = all)")
    max_surge: int | str = Field(default=1, description="Extra replicas during an update (count or '25%')")
    max_unavailable: int | str = Field(default=0, description="Replicas that may be down (count or '25%')")
    order: Literal["start-first", "stop-first"] = "start-first"
    delay: Duration = 0.0
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"
    monitor: Duration = Field(default=5.0, description="How long a new replica must stay healthy")
    max_failure_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout: Duration = Field(default=300.0, gt=0, description="Bounded wait for the rollout to converge")
    strategy: Literal["rolling", "canary"] = Field(
        default="rolling", description="rolling (every rollout), or canary (`scalewise canary` walks the steps)"
    )
    steps: list[CanaryStep] = Field(default_factory=list, description="The canary's steps, in order")

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, bool):
            raise ValueError("must be a count or a percentage like '25%'")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("cannot be negative")
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value) and int(value[:-1]) <= 100:
            return value
        raise ValueError("must be a count or a percentage like '25%'")

    @model_validator(mode="after")
    def _progress_possible(self) -> UpdateStrategy:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError("max_surge and max_unavailable cannot both be 0: the rollout could not progress")
        if self.strategy == "canary":
            check_steps(self.steps)
        elif self.steps:
            raise ValueError("steps: only with strategy: canary")
        return self

    @model_serializer(mode="wrap")
    def _omit_rolling_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A rolling strategy dumps as before canaries existed: its revision hash does not change."""
        data: dict[str, Any] = handler(self)
        if self.strategy == "rolling" and not self.steps:
            data.pop("strategy", None)
            data.pop("steps", None)
        return data


class KubernetesOptions(_Strict):
    namespace: str = "default"
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    progress_deadline: Duration = Field(default=120.0, gt=0)
    allow_foreign_scaler: bool = Field(
        default=False, description="Scale even when an HPA or another controller already scales it"
    )

    @field_validator("namespace")
    @classmethod
    def _ns(cls, value: str) -> str:
        return check_name(value)


class WorkloadSpec(_Strict):
    """One declared workload."""

    name: str = Field(description="Workload name (DNS-1123 label)")
    target: Target
    image: str
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[Port] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    healthcheck: HealthCheck | None = None
    replicas: Replicas = Field(default_factory=Replicas)
    update: UpdateStrategy = Field(default_factory=UpdateStrategy)
    kubernetes: KubernetesOptions = Field(default_factory=KubernetesOptions)
    stop_grace_period: Duration = Field(default=10.0, ge=0)
    autoscaling: AutoscalingSpec | None = None

    @field_validator("name")
    @classmethod
    def _name_check(cls, value: str) -> str:
        return check_name(value)

    @field_validator("image")
    @classmethod
    def _image_check(cls, value: str) -> str:
        return check_image(value)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"environment variable name {key!r} is not valid")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY_RE.match(key) or key.startswith("scalewise."):
                raise ValueError(f"label key {key!r} is not valid (and 'scalewise.' is reserved)")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must have at least one element when given")
        return value

    @model_validator(mode="after")
    def _ports_unique(self) -> WorkloadSpec:
        published = [p.published for p in self.ports if p.published is not None]
        if len(published) != len(set(published)):
            raise ValueError("ports: two ports publish the same host port")
        if self.target == "docker" and published and self.replicas.max > 1:
            raise ValueError(
                "ports: a plain-docker workload with max replicas > 1 cannot publish fixed host ports"
                " (every container would need the same port); leave 'published' empty"
            )
        return self

    def with_image(self, image: str) -> WorkloadSpec:
        return self.model_copy(update={"image": check_image(image)})

    def spec_hash(self) -> str:
        """Stable short hash of the spec, recorded as the config version in action records."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _format_loc(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _msg(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def spec_error_from_validation(source: str, exc: ValidationError, prefix: str = "") -> SpecError:
    """Turn pydantic's error into a SpecError naming the first bad field and every reason."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _format_loc([*([prefix] if prefix else []), *first["loc"]])
    reason = _msg(first)
    if len(errors) > 1:
        others = "; ".join(
            f"{_format_loc([*([prefix] if prefix else []), *e['loc']])}: {_msg(e)}" for e in errors[1:4]
        )
        reason = f"{reason} (also: {others})"
    return SpecError(source, field, reason)


def parse_workload(data: Any, source: str = "<spec>") -> WorkloadSpec:
    if not isinstance(data, dict):
        raise SpecError(source, "", f"a workload must be a mapping, got {type(data).__name__}")
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(source, exc) from None


# ----------------------------------------------------------------------------- strict YAML

#: Values a YAML file may expand to once aliases are followed (an alias bomb stops here).
MAX_YAML_VALUES = 100_000


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (YAML 1.2 forbids it; PyYAML keeps the last one)."""

    def __init__(self, key: Any, mark: yaml.Mark, first: yaml.Mark) -> None:
        self.key = key
        super().__init__(None, None, f"duplicate key at line {mark.line + 1} (first at line {first.line + 1})", mark)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a duplicate key (merge keys ``<<`` may still
    be overridden: that is what they are for)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: the base constructor names it
                if first is not None:
                    raise DuplicateKeyError(key, key_node.start_mark, first)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _count_values(docs: list[Any], source: str) -> None:
    """Refuse documents that expand past MAX_YAML_VALUES values (aliases counted at every use)."""
    stack: list[Any] = list(docs)
    count = 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise SpecError(source, "", f"too large: more than {MAX_YAML_VALUES} values once aliases are expanded")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)


def parse_yaml(text: str, source: str) -> list[Any]:
    """Every document of ``text`` (empty ones dropped), loaded with :class:`StrictLoader`.

    Any failure is a :class:`SpecError` naming ``source``: a syntax error (with its line), a
    duplicate key (named, with both lines), a value YAML cannot build, nesting too deep, an alias bomb.
    """
    try:
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except DuplicateKeyError as exc:
        raise SpecError(source, str(exc.key), str(exc.problem)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(source, "", f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise SpecError(source, "", "not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a timestamp like 2024-13-45
        raise SpecError(source, "", f"not valid YAML: {exc}") from None
    _count_values(docs, source)
    return docs


def read_yaml(path: Path, source: str | None = None) -> list[Any]:
    """Read ``path`` as UTF-8 and :func:`parse_yaml` it; every failure is a SpecError naming the file."""
    where = source or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(where, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            where, "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} (offset {exc.start})"
        ) from None
    return parse_yaml(text, where)


def _load_file(path: Path) -> list[WorkloadSpec]:
    docs = read_yaml(path)
    specs: list[WorkloadSpec] = []
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and "workloads" in doc and set(doc) == {"workloads"}:
            items = doc["workloads"]
            if not isinstance(items, list):
                raise SpecError(str(path), "workloads", "must be a list of workloads")
            for i, item in enumerate(items):
                specs.append(parse_workload(item, f"{path} (workloads[{i}])"))
        else:
            source = str(path) if len(docs) == 1 else f"{path} (document {index + 1})"
            specs.append(parse_workload(doc, source))
    return specs


def load_workloads(path: str | Path) -> dict[str, WorkloadSpec]:
    """Load every workload from a YAML file or a folder of ``*.yaml``/``*.yml`` files."""
    root = Path(path)
    if root.is_dir():
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    elif root.is_file():
        files = [root]
    else:
        raise SpecError(str(root), "", "no such file or folder")
    result: dict[str, WorkloadSpec] = {}
    origin: dict[str, Path] = {}
    for file in files:
        for spec in _load_file(file):
            if spec.name in result:
                raise SpecError(str(file), "name", f"workload {spec.name!r} is also declared in {origin[spec.name]}")
            result[spec.name] = spec
            origin[spec.name] = file
    return result


def get_workload(path: str | Path, name: str) -> WorkloadSpec:
    workloads = load_workloads(path)
    if name not in workloads:
        known = ", ".join(sorted(workloads)) or "none"
        raise SpecError("parameter", "workload", f"unknown workload {name!r} (known: {known})")
    return workloads[name]
