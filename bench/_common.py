"""Helpers shared by the benches: percentiles, the load average, switching the Prefect API in-process."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 0.5), digits), "p95": round(pct(values, 0.95), digits),
            "min": round(min(values), digits), "max": round(max(values), digits),
            "mean": round(statistics.fmean(values), digits)}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (what `uptime` shows)."""
    return [round(x, 2) for x in os.getloadavg()]


def use_api(api_url: str) -> None:
    """Point this process (every thread) at ``api_url``, also after Prefect was imported."""
    os.environ["PREFECT_API_URL"] = api_url
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def start_local_server(home: Path, database: str, timeout_s: float = 300.0) -> Any:
    """A Prefect server on ``database`` under ``home`` (free loopback port, roomy deadline for a loaded
    machine); if it does not come up, its PostgreSQL cluster is stopped too."""
    from scalewise.local import free_port, local_postgres, start_server

    try:
        return start_server(home, port=free_port(), timeout_s=timeout_s, database=database)  # type: ignore[arg-type]
    except Exception:
        if database == "postgres":
            local_postgres(home).stop()
        raise


def drain_prefect(timeout_s: float = 30.0) -> None:
    """Send buffered run logs and events while the server is still up (else the process spends minutes
    at exit retrying them against a stopped server)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)


def tear_down(server: Any, service: str) -> None:
    """Remove the bench's Swarm service, send Prefect's buffered logs/events, stop the server and its database."""
    import docker

    for svc in docker.from_env().services.list(filters={"name": service}):
        svc.remove()
    drain_prefect()
    server.stop()
    server.stop_database()
