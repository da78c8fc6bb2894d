"""Process settings read from the environment (documented in the README)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PREFECT_URL = "http://127.0.0.1:4200/api"


def workloads_path() -> Path:
    """Where workload specs live: ``SCALEWISE_WORKLOADS`` (file or folder), default ``./workloads``."""
    return Path(os.environ.get("SCALEWISE_WORKLOADS", "workloads"))


def state_dir() -> Path:
    path = Path(os.environ.get("SCALEWISE_STATE", str(Path.home() / ".scalewise")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_timeout_s() -> float:
    """How long an operation waits for the per-workload lock before failing."""
    return float(os.environ.get("SCALEWISE_LOCK_TIMEOUT", "300"))


#: Seconds between flow-run heartbeats (Prefect's minimum). The ``run_health`` automation in
#: deployments/automations.yaml marks a run Crashed 45 s after its last heartbeat.
HEARTBEAT_S = 30
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def enable_heartbeats() -> None:
    """Make flow runs of this process (and its children) send heartbeats every HEARTBEAT_S seconds,
    unless set already. Prefect reads its settings when imported: call this before importing it."""
    os.environ.setdefault(HEARTBEAT_ENV, str(HEARTBEAT_S))
