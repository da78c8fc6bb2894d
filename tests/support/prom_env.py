"""A real Prometheus (``/usr/bin/prometheus``) on loopback, scraping an exporter the test controls.

Fixtures
--------
``prom_env`` (session): a running :class:`PromEnv`; ``prom_env.url`` is the server,
``prom_env.exporter.set("web", 12.5)`` sets ``scalewise_test_load{workload="web",replica="0"}``
(scraped every second), ``prom_env.wait_for_value(promql, expected)`` polls until Prometheus sees it.

Alerting (for later Alertmanager tests): ``prom_env.set_rules(yaml_text_or_dict)`` replaces the rule
file and reloads; ``prom_env.set_alertmanagers(["127.0.0.1:9093"])`` points alerting at
Alertmanagers and reloads; ``prom_env.alerts()`` lists the active alerts. Other instances can be
started with :func:`start_prometheus` (a context manager) and stopped with ``env.stop()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

PROMETHEUS = os.environ.get("SCALEWISE_PROMETHEUS_BIN", "/usr/bin/prometheus")
METRIC = "scalewise_test_load"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Exporter:
    """A prometheus_client HTTP server on a random loopback port with one gauge the test sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauge = Gauge(METRIC, "Test-controlled load", ["workload", "replica"], registry=self.registry)
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)
        self.address = f"127.0.0.1:{self.port}"

    def set(self, workload: str, value: float, replica: str = "0") -> None:
        self.gauge.labels(workload=workload, replica=replica).set(value)

    def remove(self, workload: str, replica: str = "0") -> None:
        with contextlib.suppress(KeyError):
            self.gauge.remove(workload, replica)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PromEnv:
    """One Prometheus process with its own config, TSDB folder and port."""

    def __init__(
        self,
        exporter: Exporter,
        *,
        rule_files: bool = True,
        alertmanagers: list[str] | None = None,
        extra_scrape_configs: list[dict[str, Any]] | None = None,
        tls: bool = False,
        basic_auth: tuple[str, str] | None = None,
        retention: str = "2h",
        backfill: str | None = None,
    ) -> None:
        self.exporter = exporter
        self.retention = retention
        self.backfill = backfill
        self.dir = Path(tempfile.mkdtemp(prefix="sw-prom-"))
        self.config_path = self.dir / "prometheus.yml"
        self.rules_path = self.dir / "rules.yml"
        self.log_path = self.dir / "prometheus.log"
        self.use_rules = rule_files
        self.alertmanagers = list(alertmanagers or [])
        self.extra_scrape_configs = list(extra_scrape_configs or [])
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.tls = tls
        self.basic_auth = basic_auth
        self.ca_file: str | None = None
        self.web_config_path: Path | None = None
        if self.use_rules:
            self.rules_path.write_text("groups: []\n")
        self._write_config()
        if tls or basic_auth:
            self._write_web_config()

    def _write_web_config(self) -> None:
        web: dict[str, Any] = {}
        if self.tls:
            cert, key = self.dir / "tls.crt", self.dir / "tls.key"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-keyout",
                    str(key),
                    "-out",
                    str(cert),
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ],
                check=True,
                capture_output=True,
            )
            web["tls_server_config"] = {"cert_file": str(cert), "key_file": str(key)}
            self.ca_file = str(cert)
        if self.basic_auth:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # bcrypt through libxcrypt; the bcrypt package is not installed

            user, password = self.basic_auth
            web["basic_auth_users"] = {user: crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}
        self.web_config_path = self.dir / "web.yml"
        self.web_config_path.write_text(yaml.safe_dump(web))

    def _open(self, url: str, method: str = "GET", timeout: float = 10.0) -> Any:
        req = urllib.request.Request(url, method=method)
        if self.basic_auth:
            import base64

            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        context = None
        if self.ca_file:
            import ssl

            context = ssl.create_default_context(cafile=self.ca_file)
        return urllib.request.urlopen(req, timeout=timeout, context=context)

    # -- configuration

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "exporter", "static_configs": [{"targets": [self.exporter.address]}]},
                *self.extra_scrape_configs,
            ],
        }
        if self.use_rules:
            cfg["rule_files"] = [str(self.rules_path)]
        if self.alertmanagers:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]}
        return cfg

    def _write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def set_rules(self, rules: str | dict[str, Any]) -> None:
        """Replace the rule file (YAML text or a ``{"groups": [...]}`` dict) and reload."""
        if not self.use_rules:
            raise RuntimeError("this PromEnv was started without rule_files")
        text = rules if isinstance(rules, str) else yaml.safe_dump(rules, sort_keys=False)
        self.rules_path.write_text(text)
        self.reload()

    def set_alertmanagers(self, targets: list[str]) -> None:
        self.alertmanagers = list(targets)
        self._write_config()
        self.reload()

    def reload(self) -> None:
        try:
            with self._open(f"{self.url}/-/reload", method="POST") as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"prometheus refused the reload: {exc.read().decode(errors='replace')}"
            ) from None

    # -- process

    def _backfill(self) -> None:
        """Write the OpenMetrics text ``backfill`` into TSDB blocks (promtool) before the first start."""
        if not self.backfill or (self.dir / "data").exists():
            return
        source = self.dir / "backfill.om"
        source.write_text(self.backfill)
        promtool = str(Path(PROMETHEUS).with_name("promtool"))
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.dir / "data")],
            check=True, capture_output=True, timeout=120,
        )

    def start(self, timeout: float = 30.0) -> None:
        self._backfill()
        last_error = ""
        for _ in range(3):  # a port picked by free_port() can be taken meanwhile: retry
            self.port = free_port()
            self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    f"--storage.tsdb.retention.time={self.retention}",
                    "--log.level=warn",
                    *([f"--web.config.file={self.web_config_path}"] if self.web_config_path else []),
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop(keep_dir=True)
        raise RuntimeError(last_error)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self._open(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- queries

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with self._open(url) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API error: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def wait_until(self, check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_for_value(self, promql: str, expected: float | None, timeout: float = 20.0) -> None:
        """Poll until the query returns one sample equal to ``expected`` (None: no series; NaN ok)."""

        def check() -> bool:
            result = self.query(promql)
            if expected is None:
                return not result
            if len(result) != 1:
                return False
            got = float(result[0]["value"][1])
            if math.isnan(expected):
                return math.isnan(got)
            return got == expected

        self.wait_until(check, timeout, f"{promql} == {expected}")


@contextlib.contextmanager
def start_prometheus(exporter: Exporter | None = None, **kwargs: Any) -> Iterator[PromEnv]:
    """Start a Prometheus (with its own exporter unless one is given); stop it and clean up after."""
    own = exporter is None
    exp = exporter or Exporter()
    env = PromEnv(exp, **kwargs)
    try:
        env.start()
    except RuntimeError as exc:
        env.stop()
        if own:
            exp.close()
        pytest.fail(f"could not start prometheus: {exc}", pytrace=False)
    try:
        yield env
    finally:
        env.stop()
        if own:
            exp.close()


@pytest.fixture(scope="session")
def prom_env() -> Iterator[PromEnv]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is not installed (Debian package 'prometheus')", pytrace=False)
    with start_prometheus() as env:
        yield env
