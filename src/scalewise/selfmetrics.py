"""The autoscaler's own metrics (Prometheus exposition format via prometheus_client).

Served by ``scalewise autoscaler --metrics-port N`` and ``scalewise watch --metrics-port N`` on
``/metrics``. One process-wide registry (not the client's default one, so importing this module
twice or next to another exporter never collides).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "scalewise_autoscaler_decisions",
    "Autoscaling decisions, by workload, reason code and whether they change the replica count",
    ["workload", "reason", "changed"],
    registry=REGISTRY,
)
ACTIONS = Counter(
    "scalewise_autoscaler_actions",
    "Scale actions taken (or planned, in dry-run) by the autoscaler",
    ["workload", "direction", "outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "scalewise_autoscaler_errors",
    "Errors while evaluating or scaling, by stage (state, metrics, policy_state, decide, apply, save, tick)",
    ["workload", "stage"],
    registry=REGISTRY,
)
EVALUATION_SECONDS = Histogram(
    "scalewise_autoscaler_evaluation_seconds",
    "Time to evaluate one workload (read state and metrics, decide), seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "scalewise_autoscaler_tick_seconds",
    "Time of one autoscaler tick over every workload, seconds",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
DESIRED = Gauge(
    "scalewise_autoscaler_desired_replicas", "Last decided replica count", ["workload"], registry=REGISTRY
)
THRESHOLD_EVENTS = Counter(
    "scalewise_watcher_threshold_events",
    "scalewise.threshold.crossed events emitted by the watcher",
    ["workload", "metric", "direction"],
    registry=REGISTRY,
)
WATCH_ERRORS = Counter(
    "scalewise_watcher_errors", "Watcher read or emit errors", ["workload", "stage"], registry=REGISTRY
)
WATCH_TICK_SECONDS = Histogram(
    "scalewise_watcher_tick_seconds",
    "Time of one watcher tick, seconds",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)

_served: dict[int, Any] = {}
_lock = threading.Lock()


def direction(current: int, desired: int) -> str:
    return "up" if desired > current else ("down" if desired < current else "none")


def observe_decision(workload: str, reason: str, changed: bool, desired: int) -> None:
    DECISIONS.labels(workload=workload, reason=reason, changed=str(changed).lower()).inc()
    DESIRED.labels(workload=workload).set(desired)


def serve(port: int, addr: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread (port 0: any); returns the port."""
    with _lock:
        if port and port in _served:
            return port
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
        bound = int(server.server_port)
        _served[bound] = server
        return bound


def stop(port: int) -> None:
    with _lock:
        server = _served.pop(port, None)
    if server is not None:
        server.shutdown()
        server.server_close()
