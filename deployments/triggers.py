"""Schedules and triggers of the deployments, read from prefect.yaml: the one definition.

``prefect deploy`` applies what prefect.yaml declares; ``deployments/serve.py`` calls
:func:`declared` so the served deployments carry the same ``schedules:`` and ``triggers:``
(deployment triggers in prefect.yaml are otherwise only applied by ``prefect deploy``).

``SCALEWISE_AUTOSCALE_INTERVAL`` overrides the interval of the served ``autoscale`` schedule
(seconds or a duration such as ``30s``; ``0``/``off`` keeps the schedule but makes it inactive).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from scalewise.spec import read_yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "prefect.yaml"
AUTOSCALE_ENTRYPOINT = "flows/autoscale.py:autoscale"
ENV_AUTOSCALE_INTERVAL = "SCALEWISE_AUTOSCALE_INTERVAL"


def project(path: Path = PROJECT) -> dict[str, Any]:
    docs = read_yaml(path)  # strict: a duplicate key is an error naming the file, the key and its line
    data: dict[str, Any] = docs[0] if docs else {}
    return data


def deployment_config(entrypoint: str, path: Path = PROJECT) -> dict[str, Any]:
    for item in project(path).get("deployments") or []:
        if item.get("entrypoint") == entrypoint:
            return dict(item)
    return {}


def triggers_of(entrypoint: str, flow_name: str, path: Path = PROJECT) -> list[Any]:
    """The deployment triggers declared for ``entrypoint``, validated like ``prefect deploy`` does."""
    from prefect.events import DeploymentTriggerTypes

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    config = deployment_config(entrypoint, path)
    result = []
    for index, spec in enumerate(config.get("triggers") or [], start=1):
        spec = dict(spec)
        spec.setdefault("name", f"{flow_name}/{config.get('name', 'scalewise')}__automation_{index}")
        result.append(adapter.validate_python(spec))
    return result


def _interval_override(entrypoint: str) -> tuple[float, bool] | None:
    raw = os.environ.get(ENV_AUTOSCALE_INTERVAL, "").strip().lower()
    if entrypoint != AUTOSCALE_ENTRYPOINT or not raw:
        return None
    if raw in ("0", "off", "none", "false"):
        return (3600.0, False)
    from scalewise.durations import parse_duration

    return (parse_duration(raw), True)


def schedules_of(entrypoint: str, path: Path = PROJECT) -> list[Any]:
    """The ``schedules:`` of ``entrypoint`` (``interval`` or ``cron`` items) as Prefect schedules."""
    from prefect.schedules import Cron, Interval

    config = deployment_config(entrypoint, path)
    override = _interval_override(entrypoint)
    result = []
    for item in config.get("schedules") or []:
        active = bool(item.get("active", True))
        timezone = item.get("timezone")
        params = item.get("parameters")
        if "interval" in item:
            seconds = float(item["interval"])
            if override is not None:
                seconds, active = override
            result.append(
                Interval(timedelta(seconds=seconds), timezone=timezone, active=active, parameters=params)
            )
        elif "cron" in item:
            result.append(Cron(item["cron"], timezone=timezone, active=active, parameters=params))
        else:
            raise ValueError(f"{entrypoint}: unsupported schedule {item!r} (use interval or cron)")
    return result


def declared(entrypoint: str, flow_name: str, path: Path = PROJECT) -> dict[str, Any]:
    """``to_deployment`` keyword arguments for what prefect.yaml declares (only those present)."""
    kwargs: dict[str, Any] = {}
    triggers = triggers_of(entrypoint, flow_name, path)
    if triggers:
        kwargs["triggers"] = triggers
    schedules = schedules_of(entrypoint, path)
    if schedules:
        kwargs["schedules"] = schedules
    limit = deployment_config(entrypoint, path).get("concurrency_limit")
    if limit is not None:
        from prefect.client.schemas.objects import ConcurrencyLimitConfig

        kwargs["concurrency_limit"] = limit if isinstance(limit, int) else ConcurrencyLimitConfig(**limit)
    return kwargs
