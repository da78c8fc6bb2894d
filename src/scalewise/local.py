"""The embedded default: a local Prefect server (SQLite) started on demand.

The server is started with filesystem lease storage for concurrency limits: with the default
in-memory lease storage a server restart leaks every held per-workload lock forever and crashes
the holder (seen on prefect 3.9.1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def server_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
    )
    env.pop("PREFECT_API_URL", None)
    return env


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class LocalServer:
    api_url: str
    home: Path
    process: subprocess.Popen[bytes] | None
    log_file: Path

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_server(home: Path, port: int = 4200, timeout_s: float = 90.0) -> LocalServer:
    """Start ``prefect server start`` on 127.0.0.1:``port`` with its database under ``home``.

    Returns at once if a healthy server already answers there.
    """
    api_url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / "server.log"
    if healthy(api_url):
        return LocalServer(api_url, home, None, log_file)
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=server_env(home, port), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{tail}")
        if healthy(api_url, timeout=1.0):
            return LocalServer(api_url, home, proc, log_file)
        time.sleep(0.3)
    server = LocalServer(api_url, home, proc, log_file)
    server.stop()
    raise RuntimeError(f"prefect server did not become healthy within {timeout_s:.0f}s; see {log_file}")
