"""Prometheus metric source over ``prometheus_api_client.PrometheusConnect``.

Query templates name the workload with ``{workload}``, ``{namespace}`` and ``{target}`` placeholders
inside double-quoted label values (``up{job="{workload}"}``; the config refuses any other position).
Values are checked against the workload-name rule *and* escaped for a PromQL double-quoted string,
so a hostile name cannot change the query.

Outcomes (never a zero for a failure):

* one series / a scalar with a finite value -> ``ok``;
* no series -> ``empty`` (the metric's ``on_empty: zero`` makes the policy read it as 0);
* several series -> summed, maxed or a failed read (``multiple_series``), or, with
  ``per_replica_label``, one value per replica;
* NaN or +/-Inf -> failed read ``nan`` / ``inf``;
* HTTP error -> ``http`` (400/422: ``bad_query``); refused/reset/TLS -> ``connection``;
  no answer in time -> ``timeout``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from scalewise.metrics.base import Clock, WorkloadRef, utc_now
from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading

_PLACEHOLDER = re.compile(r"\{(workload|namespace|target)\}")


def escape_label_value(value: str) -> str:
    """Escape for a PromQL double-quoted string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def render_query(template: str, workload: WorkloadRef) -> str:
    """Substitute the placeholders; ValueError when a value breaks the workload-name rule."""
    ref = workload.validated()
    values = {"workload": ref.name, "namespace": ref.namespace, "target": ref.target}
    return _PLACEHOLDER.sub(lambda m: escape_label_value(values[m.group(1)]), template)


class PrometheusSource:
    """Reads ``prometheus`` metrics. One instance per Prometheus server; thread-safe for reads."""

    kind = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
        client_cert: tuple[str, str] | None = None,
        retries: int = 1,
        headers: dict[str, str] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if bearer_token and basic_auth:
            raise ValueError("use either bearer_token or basic_auth, not both")
        if insecure and ca_file:
            raise ValueError("use either ca_file or insecure, not both")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        session = requests.Session()
        session.verify = False if insecure else (ca_file or True)
        if client_cert:
            session.cert = client_cert
        all_headers = dict(headers or {})
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        retry = Retry(
            total=retries,
            connect=retries,
            read=0,
            backoff_factor=0.05,
            status_forcelist=(502, 503, 504),
            allowed_methods=None,
        )
        self._prom = PrometheusConnect(
            url=self.url,
            headers=all_headers or None,
            auth=basic_auth,
            session=session,
            retry=retry,
            timeout=timeout,  # type: ignore[arg-type,unused-ignore]  # requests accepts a float
        )

    def close(self) -> None:
        self._prom.close()

    def query(self, promql: str) -> Any:
        """Raw instant query (server-side timeout too); raises the client's exceptions."""
        return self._prom.custom_query(promql, params={"timeout": f"{self.timeout:g}s"})

    def query_range(self, promql: str, start: datetime, end: datetime, step_s: float) -> Any:
        """Raw range query (``/api/v1/query_range``); raises the client's exceptions."""
        return self._prom.custom_query_range(
            promql, start_time=start, end_time=end, step=f"{step_s:g}s", params={"timeout": f"{self.timeout:g}s"}
        )

    def history(
        self, metric: MetricTarget, workload: WorkloadRef, start: datetime, end: datetime, step_s: float
    ) -> list[tuple[float, float]]:
        """``(unix seconds, value)`` of the metric's query over ``[start, end]``; several series are
        summed per timestamp (a demand total); NaN/Inf points are dropped. Raises ValueError for a
        refused workload reference and the client's exceptions for a failed query."""
        if metric.query is None:
            raise ValueError(f"metric {metric.name!r} has no query")
        result = self.query_range(render_query(metric.query, workload), start, end, step_s)
        totals: dict[float, float] = {}
        for series in result or []:
            for ts, raw in series.get("values", []):
                value = _to_float(raw)
                if value is not None and math.isfinite(value):
                    totals[float(ts)] = totals.get(float(ts), 0.0) + value
        return sorted(totals.items())

    def read(self, metric: MetricTarget, workload: WorkloadRef) -> MetricReading:
        name = metric.name
        if metric.query is None:
            return MetricReading.failure(name, self._clock(), "bad_query", "metric has no query")
        try:
            promql = render_query(metric.query, workload)
        except ValueError as exc:
            return MetricReading.failure(
                name, self._clock(), "bad_query", f"refused workload reference: {exc}"
            )
        try:
            result = self.query(promql)
        except requests.exceptions.Timeout as exc:
            return MetricReading.failure(name, self._clock(), "timeout", _short(exc))
        except requests.exceptions.RequestException as exc:
            return MetricReading.failure(name, self._clock(), _request_error_code(exc), _short(exc))
        except PrometheusApiClientException as exc:
            text = str(exc)
            code = "bad_query" if re.search(r"Status Code (400|422)\b", text) else "http"
            return MetricReading.failure(name, self._clock(), code, text[:300])
        except ValueError as exc:  # body was not JSON
            return MetricReading.failure(name, self._clock(), "source", f"unreadable answer: {exc}")
        return self._interpret(metric, result)

    # -- result handling

    def _interpret(self, metric: MetricTarget, result: Any) -> MetricReading:
        name = metric.name
        now = self._clock()
        # A scalar comes back as [timestamp, "value"]; a vector as a list of {"metric", "value"}.
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            return _value_reading(name, result[0], result[1], now)
        if not isinstance(result, list):
            return MetricReading.failure(
                name, now, "source", f"unexpected result type {type(result).__name__}"
            )
        if not result:
            return MetricReading.failure(name, now, "empty", "the query returned no series")
        samples: list[tuple[dict[str, str], float, float]] = []
        for series in result:
            if not isinstance(series, dict) or "value" not in series:
                return MetricReading.failure(
                    name, now, "bad_query", "the query must return an instant vector or a scalar"
                )
            ts, raw = series["value"]
            value = _to_float(raw)
            if value is None:
                return MetricReading.failure(name, now, "source", f"not a number: {raw!r}")
            if math.isnan(value):
                return MetricReading.failure(name, now, "nan", f"NaN in series {series.get('metric', {})}")
            if math.isinf(value):
                return MetricReading.failure(name, now, "inf", f"{raw} in series {series.get('metric', {})}")
            samples.append((series.get("metric") or {}, float(ts), value))
        stamp = datetime.fromtimestamp(max(s[1] for s in samples), UTC)
        if metric.per_replica_label:
            label = metric.per_replica_label
            grouped: dict[str, list[float]] = {}
            for labels, _, value in samples:
                replica = labels.get(label)
                if replica is None:
                    return MetricReading.failure(
                        name, now, "multiple_series", f"a series has no {label!r} label"
                    )
                grouped.setdefault(replica, []).append(value)
            values: dict[str, float] = {}
            for replica, vals in sorted(grouped.items()):
                merged = _merge(vals, metric.multiple_series)
                if merged is None:
                    return MetricReading.failure(
                        name, now, "multiple_series", f"{len(vals)} series for replica {replica!r}"
                    )
                values[replica] = merged
            return MetricReading.per_replica(name, stamp, values)
        merged = _merge([s[2] for s in samples], metric.multiple_series)
        if merged is None:
            shown = ", ".join(str(s[0]) for s in samples[:3])
            return MetricReading.failure(
                name, now, "multiple_series", f"{len(samples)} series (set multiple_series: sum|max): {shown}"
            )
        return MetricReading.success(name, stamp, merged)


def _merge(values: list[float], how: str) -> float | None:
    if len(values) == 1:
        return values[0]
    if how == "sum":
        return math.fsum(values)
    if how == "max":
        return max(values)
    return None


def _to_float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _value_reading(name: str, ts: Any, raw: Any, now: datetime) -> MetricReading:
    value = _to_float(raw)
    if value is None:
        return MetricReading.failure(name, now, "source", f"not a number: {raw!r}")
    if math.isnan(value):
        return MetricReading.failure(name, now, "nan", "the scalar is NaN")
    if math.isinf(value):
        return MetricReading.failure(name, now, "inf", f"the scalar is {raw}")
    return MetricReading.success(name, datetime.fromtimestamp(float(ts), UTC), value)


def _request_error_code(exc: requests.exceptions.RequestException) -> str:
    text = str(exc)
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timeout"
    if isinstance(exc, requests.exceptions.HTTPError | requests.exceptions.RetryError):
        return "http"
    return "connection"


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
