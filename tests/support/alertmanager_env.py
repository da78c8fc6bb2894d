"""A real Alertmanager (``/usr/bin/prometheus-alertmanager``) on loopback, no clustering, its webhook
receiver pointed at a URL with a bearer token.

``start_alertmanager(webhook_url, token)`` is a context manager yielding an :class:`AlertmanagerEnv`
(``.address`` to give Prometheus, ``.url``, ``.alerts()``); the process and its folder are removed after.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prefect_env import free_port

ALERTMANAGER = os.environ.get("SCALEWISE_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")


def alertmanager_config(webhook_url: str, token: str, group_wait: str = "0s") -> dict[str, Any]:
    return {
        "route": {
            "receiver": "scalewise",
            "group_by": ["alertname", "workload"],
            "group_wait": group_wait,
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "scalewise",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            }
        ],
    }


class AlertmanagerEnv:
    def __init__(self, webhook_url: str, token: str, group_wait: str = "0s") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sw-am-"))
        self.config_path = self.dir / "alertmanager.yml"
        self.log_path = self.dir / "alertmanager.log"
        self.config_path.write_text(yaml.safe_dump(alertmanager_config(webhook_url, token, group_wait)))
        os.chmod(self.config_path, 0o600)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout_s: float = 30) -> None:
        last = ""
        for _ in range(3):  # the free port may be taken meanwhile: retry on another
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        ALERTMANAGER,
                        f"--config.file={self.config_path}",
                        f"--web.listen-address={self.address}",
                        "--cluster.listen-address=",
                        f"--storage.path={self.dir / 'data'}",
                        "--log.level=warn",
                    ],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                        if resp.status == 200:
                            return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.1)
            last = self.log_tail()
            self.stop(keep_dir=True)
        raise RuntimeError(f"alertmanager did not start:\n{last}")

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            return list(json.loads(resp.read()))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def start_alertmanager(webhook_url: str, token: str, group_wait: str = "0s") -> Iterator[AlertmanagerEnv]:
    if not Path(ALERTMANAGER).exists():
        pytest.fail(f"{ALERTMANAGER} is not installed (Debian package 'prometheus-alertmanager')", pytrace=False)
    env = AlertmanagerEnv(webhook_url, token, group_wait)
    try:
        env.start()
    except RuntimeError as exc:
        env.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield env
    finally:
        env.stop()
