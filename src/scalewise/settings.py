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
