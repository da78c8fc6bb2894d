"""Session fixtures for the real Docker engine and single-node Swarm (started by our own script)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE_V1 = "scalewise/busybox:1"
IMAGE_V2 = "scalewise/busybox:2"
IMAGE_V3 = "scalewise/busybox:3"
IMAGE_BROKEN = "scalewise/busybox:broken"
HTTP_CHECK = "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"
#: Test workloads are checked every 2 s. Each check is a ``docker exec`` (runc's init, sh, wget, and the
#: engine's share): ~50 ms of CPU. At 1 s the whole suite ran ~11,300 checks, about a fifth of its CPU on a
#: 2-core machine (process accounting of one whole run); a container turns healthy ~1 s later at 2 s.
CHECK_INTERVAL_S = 2
TEST_LABEL = "scalewise.test"


def health_check(timeout_s: float = 1, retries: int = 2) -> dict[str, Any]:
    """A workload spec's ``healthcheck`` for the test image's HTTP server, every CHECK_INTERVAL_S."""
    return {"command": HTTP_CHECK, "interval": CHECK_INTERVAL_S, "timeout": timeout_s, "retries": retries}


def ensure_docker() -> None:
    """Start dockerd + Swarm and build test images; fail (never skip) with the script's output."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-docker.sh")], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"could not start the Docker engine:\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    ensure_docker()
    yield


def unique_name(prefix: str = "t") -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"
