"""Backtests: replay recorded demand through the real autoscaling policy and score it against the HPA
defaults and an oracle. A service (no Prefect): the CLI and the ``backtest`` flow call :func:`backtest`."""

from scalewise.backtest.model import ServiceModel
from scalewise.backtest.run import (
    HPA,
    ORACLE,
    WORKLOAD,
    Backtest,
    backtest,
    hpa_policy,
    load_demand,
    load_policy,
    policies_for,
)
from scalewise.backtest.trace import Trace, TraceError, from_prometheus, load_csv

__all__ = [
    "HPA",
    "ORACLE",
    "WORKLOAD",
    "Backtest",
    "ServiceModel",
    "Trace",
    "TraceError",
    "backtest",
    "from_prometheus",
    "hpa_policy",
    "load_csv",
    "load_demand",
    "load_policy",
    "policies_for",
]
